"""Medical volumes to 2-D slices: the MSD lung (Task06_Lung) conversion.

MSD is distributed as NIfTI volumes (``imagesTr/lung_001.nii.gz`` with the CT in
Hounsfield units, ``labelsTr/lung_001.nii.gz`` with 1 on the tumour). The paper
evaluates 2-D slices. This module turns each volume into PNG slices::

    <dest>/slices/images/lung_001_57.png     # CT slice z = 57, windowed to 0..255
    <dest>/slices/masks/lung_001_57.png      # its tumour mask, 0 / 255
    <dest>/slices/conversion.json            # how they were made (reused when unchanged)

* Slices: ``volume[:, :, z]`` as stored in the array, not transposed, as the authors'
  script does (the anatomy then appears transposed against the usual radiological view).
* Which slices: by default only those with tumour (label > 0 somewhere in the slice);
  ``all_slices=True`` also writes the tumour-free ones, which get an empty mask and so
  are normal samples, as in the authors' code.
* Intensities: by default the CT window [-1000, 400] HU is mapped linearly to 0..255
  (values outside are clipped), so every slice of every case uses one scale.
  ``window="minmax"`` rescales each slice by its own min and max, as the authors did.

Reading NIfTI needs ``nibabel`` (``pip install 'tpslab[medical]'``); the slice
selection and windowing below are plain NumPy and need nothing extra.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from tpslab.utils import TPSLabError, atomic_path, atomic_write_json

HU_WINDOW = (-1000.0, 400.0)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SLICES_DIR = "slices"
CONVERSION_FILE = "conversion.json"

Window = tuple[float, float] | str  # (low HU, high HU) or "minmax"


def window_slice(arr: np.ndarray, window: Window = HU_WINDOW) -> np.ndarray:
    """Map a 2-D CT slice to uint8.

    Args:
        arr: (H, W) intensities (Hounsfield units for CT).
        window: ``(low, high)``: ``low`` -> 0, ``high`` -> 255, linear in between,
            clipped outside; or ``"minmax"``: the slice's own min -> 0 and max -> 255
            (a constant slice gives 0).

    >>> window_slice(np.array([[-2000.0, -1000.0], [-300.0, 400.0]])).tolist()
    [[0, 0], [128, 255]]
    """
    arr = np.asarray(arr, dtype=np.float64)
    if isinstance(window, str):
        if window != "minmax":
            raise TPSLabError(f"unknown CT window {window!r}: use 'minmax' or two numbers 'LOW,HIGH'")
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, np.uint8)
    else:
        lo, hi = (float(v) for v in window)
        if hi <= lo:
            raise TPSLabError(f"CT window {window}: the upper bound must exceed the lower")
    scaled = (np.clip(arr, lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(scaled).astype(np.uint8)


def parse_window(text: str | Window) -> Window:
    """``"-1000,400"`` -> ``(-1000.0, 400.0)``; ``"minmax"`` stays as it is."""
    if not isinstance(text, str):
        return (float(text[0]), float(text[1]))
    if text.strip().lower() == "minmax":
        return "minmax"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as err:
        raise TPSLabError(f"CT window {text!r}: expected 'LOW,HIGH' in HU (e.g. -1000,400) or 'minmax'") from err
    if hi <= lo:
        raise TPSLabError(f"CT window {text!r}: the upper bound must exceed the lower")
    return (lo, hi)


def tumour_slices(label: np.ndarray) -> list[int]:
    """Indices z (last axis) of the slices where ``label > 0`` anywhere."""
    label = np.asarray(label)
    if label.ndim != 3:
        raise TPSLabError(f"a label volume must be 3-D, got shape {label.shape}")
    return [int(z) for z in np.flatnonzero((label > 0).any(axis=(0, 1)))]


def volume_slices(image: np.ndarray, label: np.ndarray, window: Window = HU_WINDOW,
                  all_slices: bool = False) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(z, image_uint8, mask_uint8)`` for the slices to keep of one volume.

    Args:
        image: (X, Y, Z) CT volume.
        label: (X, Y, Z) label volume, tumour where > 0.
        window: see :func:`window_slice`.
        all_slices: also yield tumour-free slices (their mask is all zero).

    Masks are 0 / 255.
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.shape != label.shape or image.ndim != 3:
        raise TPSLabError(f"image volume {image.shape} and label volume {label.shape} must be equal 3-D shapes")
    keep = range(image.shape[-1]) if all_slices else tumour_slices(label)
    for z in keep:
        mask = (label[:, :, z] > 0).astype(np.uint8) * 255
        yield z, window_slice(image[:, :, z], window), mask


def load_nifti(path: str | os.PathLike) -> np.ndarray:
    """Read a NIfTI volume as an array (needs nibabel)."""
    try:
        import nibabel
    except ImportError as err:
        raise TPSLabError(
            f"{path}: reading NIfTI volumes needs nibabel: pip install 'tpslab[medical]' (or pip install nibabel)"
        ) from err
    try:
        return np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises many kinds on a damaged file
        raise TPSLabError(f"{path}: cannot read NIfTI volume ({err.__class__.__name__}: {err})") from err


def _case_name(path: Path) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def find_cases(root: str | os.PathLike) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``.

    Hidden files (the ``._lung_001.nii.gz`` AppleDouble files found in the MSD archives)
    are skipped. ``imagesTs`` has no labels and is not used.

    Returns:
        ``[(case, image, label), ...]`` sorted by case, and one problem line per image
        without its label or label without its image.
    """
    root = Path(root)
    found: dict[str, dict[str, Path]] = {"imagesTr": {}, "labelsTr": {}}
    for sub, cases in found.items():
        folder = root / sub
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                name = _case_name(p)
                if name and not p.name.startswith(".") and p.is_file():
                    cases[name] = p
    images, labels = found["imagesTr"], found["labelsTr"]
    problems = [f"{images[c]}: no label volume {root / 'labelsTr' / images[c].name}"
                for c in sorted(images.keys() - labels.keys())]
    problems += [f"{labels[c]}: label volume without its image in {root / 'imagesTr'}"
                 for c in sorted(labels.keys() - images.keys())]
    cases = [(c, images[c], labels[c]) for c in sorted(images.keys() & labels.keys())]
    return cases, problems


def _settings(window: Window, all_slices: bool, cases: list[str]) -> dict:
    return {"window": window if isinstance(window, str) else [float(v) for v in window],
            "all_slices": bool(all_slices), "cases": cases}


def convert_msd(root: str | os.PathLike, dest: str | os.PathLike | None = None, window: Window = HU_WINDOW,
                all_slices: bool = False) -> tuple[Path, list[str]]:
    """Convert ``root/imagesTr`` + ``root/labelsTr`` to PNG slices under ``dest/slices``.

    The slices are written to a temporary folder beside ``dest/slices`` and moved into
    place only when every case converted, so a failed run leaves no partial folder. A
    previous conversion with the same settings is reused; one with other settings is
    replaced; a ``slices`` folder that tpslab did not make is never touched.

    Args:
        root: the ``Task06_Lung`` folder.
        dest: where ``slices/`` goes (default: ``root``).
        window: CT window, see :func:`window_slice`.
        all_slices: also write tumour-free slices (as normal samples).

    Returns:
        the ``slices`` folder and notes for the user (one line each).

    Raises:
        TPSLabError: no volumes, unpaired volumes, unreadable files, nibabel missing.
    """
    root = Path(root)
    dest = Path(dest) if dest is not None else root
    target = dest / SLICES_DIR
    cases, problems = find_cases(root)
    if problems:
        raise TPSLabError(f"{root}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))
    if not cases:
        raise TPSLabError(f"{root}: no NIfTI volumes in imagesTr/ and labelsTr/ (MSD Task06_Lung layout)")
    settings = _settings(window, all_slices, [c for c, _, _ in cases])
    record = target / CONVERSION_FILE
    if target.exists():
        if not record.is_file():
            raise TPSLabError(f"{target}: exists but was not made by tpslab; move it away to convert the volumes again")
        try:
            previous = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if previous == settings:
            return target, [f"{target}: reusing slices converted earlier with the same settings"]

    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{SLICES_DIR}.partial-"))
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        counts = []
        for case, image_path, label_path in cases:
            n = 0
            image, label = load_nifti(image_path), load_nifti(label_path)
            try:
                for z, img, mask in volume_slices(image, label, window, all_slices):
                    _save_png(img, staging / "images" / f"{case}_{z}.png")
                    _save_png(mask, staging / "masks" / f"{case}_{z}.png")
                    n += 1
            except TPSLabError as err:
                raise TPSLabError(f"{image_path}: {err}") from err
            counts.append(n)
        atomic_write_json(staging / CONVERSION_FILE, settings)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=dest, prefix=f".{SLICES_DIR}.old-"))
            os.replace(target, old / SLICES_DIR)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    empty = [c for (c, _, _), n in zip(cases, counts, strict=True) if n == 0]
    notes = [f"{target}: {sum(counts)} slices from {len(cases)} volumes"]
    if empty:
        notes.append(f"{target}: no tumour slice in {len(empty)} volume(s): {', '.join(empty)}")
    return target, notes


def _save_png(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
