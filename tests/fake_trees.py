"""Tiny fake copies of each data set's distributed layout, for the prepare tests.

Every image is 16x16; every mask marks a 6x6 square (0/255) unless told otherwise.
Each builder returns the root it filled.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16


def image(path: Path, size: tuple[int, int] = (SIZE, SIZE), value: int = 120) -> Path:
    """An RGB (or, by suffix, any format PIL writes) image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, np.uint8)
    arr[::2, ::2] = 30
    Image.fromarray(arr).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (SIZE, SIZE), marked: bool = True, high: int = 255) -> Path:
    """A single-channel mask: a square of ``high`` on 0, or all 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    if marked:
        arr[4:10, 4:10] = high
    Image.fromarray(arr).save(path)
    return path


def mvtec_like(root: Path, classes: list[str], normal: str = "good", defects: dict[str, int] | None = None,
               n_train: int = 2, n_good: int = 2, img_ext: str = ".png", mask_ext: str = ".png",
               mask_suffix: str = "_mask") -> Path:
    """``<class>/{train/<normal>,test/<normal>,test/<defect>,ground_truth/<defect>}``."""
    defects = defects or {"crack": 2, "hole": 1}
    for cls in classes:
        for i in range(n_train):
            image(root / cls / "train" / normal / f"{i:03d}{img_ext}")
        for i in range(n_good):
            image(root / cls / "test" / normal / f"{i:03d}{img_ext}")
        for defect, n in defects.items():
            for i in range(n):
                image(root / cls / "test" / defect / f"{i:03d}{img_ext}")
                mask(root / cls / "ground_truth" / defect / f"{i:03d}{mask_suffix}{mask_ext}")
    (root / "license.txt").write_text("fake")
    return root


def btad(root: Path) -> Path:
    """BTAD's suffixes differ by class: 01 bmp/png, 02 png/png, 03 bmp/bmp; masks share the stem."""
    for cls, img_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".png"), ("03", ".bmp", ".bmp")):
        mvtec_like(root, [cls], normal="ok", defects={"ko": 3}, img_ext=img_ext, mask_ext=mask_ext, mask_suffix="")
    return root


VISA_HEADER = ["object", "split", "label", "image", "mask"]


def visa(root: Path, classes: list[str], n_train: int = 3, n_normal: int = 2, n_anomaly: int = 2,
         mask_value: int = 255) -> Path:
    """``<class>/Data/{Images/{Normal,Anomaly},Masks/Anomaly}`` and ``split_csv/1cls.csv``."""
    rows = []
    for cls in classes:
        for i in range(n_train + n_normal):
            rel = f"{cls}/Data/Images/Normal/{i:04d}.JPG"
            image(root / rel)
            rows.append([cls, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_anomaly):
            rel, mrel = f"{cls}/Data/Images/Anomaly/{i:03d}.JPG", f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
            image(root / rel)
            mask(root / mrel, high=mask_value)
            rows.append([cls, "test", "anomaly", rel, mrel])
    write_csv(root / "split_csv" / "1cls.csv", VISA_HEADER, rows)
    return root


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def image_mask_folders(root: Path, img_dir: str, mask_dir: str, stems: list[str], img_ext: str = ".jpg",
                       mask_ext: str = ".png", mask_suffix: str = "", empty: tuple[str, ...] = ()) -> Path:
    """An image folder and a mask folder; masks of the ``empty`` stems mark nothing."""
    for stem in stems:
        image(root / img_dir / f"{stem}{img_ext}")
        mask(root / mask_dir / f"{stem}{mask_suffix}{mask_ext}", marked=stem not in empty)
    return root


def no_yes(root: Path, n_no: int, n_yes: int, no: str = "no", yes: str = "yes", names=None) -> Path:
    """``no/`` and ``yes/`` image folders."""
    names = names or {}
    for i in range(n_no):
        image(root / no / names.get(("no", i), f"no{i}.jpg"))
    for i in range(n_yes):
        image(root / yes / names.get(("yes", i), f"y{i}.jpg"))
    return root


def headct_kaggle(root: Path, labels: list[int]) -> Path:
    """Kaggle's HeadCT: ``labels.csv`` (``id, hemorrhage``) and ``head_ct/head_ct/000.png``..."""
    for i in range(len(labels)):
        image(root / "head_ct" / "head_ct" / f"{i:03d}.png")
    path = root / "labels.csv"
    path.write_text("id, hemorrhage\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    return root


def msd_volumes(root: Path, cases: dict[str, list[int]], shape: tuple[int, int, int] = (12, 10, 5)) -> Path:
    """``imagesTr/<case>.nii.gz`` + ``labelsTr/<case>.nii.gz`` (needs nibabel), tumour on the listed z.

    Also drops the AppleDouble ``._<case>.nii.gz`` files found in MSD's archives.
    """
    import nibabel

    for case, tumour_z in cases.items():
        ct = np.linspace(-1200, 600, int(np.prod(shape)), dtype=np.float32).reshape(shape).astype(np.int16)
        label = np.zeros(shape, np.uint8)
        for z in tumour_z:
            label[3:7, 2:6, z] = 1
        for sub, arr in (("imagesTr", ct), ("labelsTr", label)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nibabel.save(nibabel.Nifti1Image(arr, np.eye(4)), str(root / sub / f"{case}.nii.gz"))
            (root / sub / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    return root
