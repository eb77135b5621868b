"""tpslab.data.validate: every content problem is one line naming its file."""

from __future__ import annotations

import io
from pathlib import Path

import fake_trees as ft
import numpy as np
import pytest
from PIL import Image

from tpslab.data.meta import MetaError, load_meta, write_meta
from tpslab.data.validate import content_problems, mask_problem, validate


def sample(img: str, mask: str = "", anomaly: int = 1, cls: str = "c") -> dict:
    return {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": "d" if anomaly else "good",
            "anomaly": anomaly}


def make(root: Path, samples: list[dict], train: list[dict] | None = None) -> Path:
    """Write the files the samples name (images, 0/255 masks) unless they exist, then meta.json."""
    for s in samples + (train or []):
        if not (root / s["img_path"]).exists():
            ft.image(root / s["img_path"])
        if s["mask_path"] and not (root / s["mask_path"]).exists():
            ft.mask(root / s["mask_path"], marked=bool(s["anomaly"]))
    test: dict[str, list] = {}
    for s in samples:
        test.setdefault(s["cls_name"], []).append(s)
    return write_meta({"test": test, "train": {"c": train} if train else {}}, root)


def jpeg_mask(path: Path) -> Path:
    """A 0/255 square saved as JPEG: ringing gives values near 0 and 255 along its edge."""
    arr = np.zeros((64, 64), np.uint8)
    arr[16:48, 20:44] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=75)
    return path


def test_a_clean_meta_has_no_problems(tmp_path):
    path = make(tmp_path, [sample("n.png", anomaly=0), sample("a.png", "a_mask.png")],
                train=[sample("t.png", anomaly=0)])
    meta = validate(path, needs_both_labels=True, needs_masks=True)  # the train split has normals only: fine
    assert meta.classes() == ["c"]


def test_jpeg_noisy_mask_is_binarisable(tmp_path):
    ft.image(tmp_path / "a.jpg", size=(64, 64))
    jpeg_mask(tmp_path / "a_mask.jpg")
    values = np.unique(np.asarray(Image.open(tmp_path / "a_mask.jpg")))
    assert len(values) > 2  # really noisy
    assert content_problems(load_meta(make(tmp_path, [sample("a.jpg", "a_mask.jpg")]))) == []


def test_size_mismatch_names_both_files(tmp_path):
    ft.mask(tmp_path / "a_mask.png", size=(32, 16))
    problems = content_problems(load_meta(make(tmp_path, [sample("a.png", "a_mask.png")])))
    assert problems == [f"{tmp_path / 'a_mask.png'}: mask is 32x16 but its image {tmp_path / 'a.png'} is 16x16 (test/c)"]


def test_grey_mask_is_not_binarisable(tmp_path):
    ft.image(tmp_path / "a.png", size=(64, 64))
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grey).save(tmp_path / "a_mask.png")
    [line] = content_problems(load_meta(make(tmp_path, [sample("a.png", "a_mask.png")])))
    assert line.startswith(f"{tmp_path / 'a_mask.png'}: mask is not binary: 59% of its pixels are mid-grey")


def test_label_agreement_and_label_index_masks(tmp_path):
    ft.mask(tmp_path / "idx.png", high=2)        # VisA-style defect index 2: a label map, read as "non-zero = defect"
    ft.mask(tmp_path / "empty.png", marked=False)
    ft.mask(tmp_path / "full.png")
    samples = [sample("a.png", "idx.png"), sample("b.png", "empty.png"), sample("c.png", "full.png", anomaly=0)]
    problems = content_problems(load_meta(make(tmp_path, samples)))
    assert problems == [
        f"{tmp_path / 'empty.png'}: mask of an anomalous sample marks no pixel (test/c)",
        f"{tmp_path / 'full.png'}: mask of a normal sample marks 36 pixel(s) (test/c)",
    ]


def test_a_mask_of_0_and_1_is_fine():
    mask = np.zeros((8, 8), np.float32)
    mask[2:4, 2:4] = 1.0
    assert mask_problem(mask, 1) is None


def test_unreadable_image_and_mask(tmp_path):
    path = make(tmp_path, [sample("a.png", "a_mask.png"), sample("b.png", "b_mask.png")])
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b_mask.png").write_bytes(io.BytesIO(b"also garbage").getvalue())
    problems = content_problems(load_meta(path))
    assert problems == [f"{tmp_path / 'a.png'}: cannot read image (UnidentifiedImageError) (test/c)",
                        f"{tmp_path / 'b_mask.png'}: cannot read image (UnidentifiedImageError) (test/c)"]


def test_both_labels_and_masks_when_a_metric_needs_them(tmp_path):
    samples = [sample("a.png", "a_mask.png"), sample("b.png"), sample("n.png", anomaly=0, cls="other")]
    meta = load_meta(make(tmp_path, samples))
    assert content_problems(meta) == []
    assert content_problems(meta, needs_both_labels=True) == [
        f"{tmp_path / 'meta.json'}: test/c has no normal sample (image AUROC/AP need both)",
        f"{tmp_path / 'meta.json'}: test/other has no anomalous sample (image AUROC/AP need both)"]
    assert content_problems(meta, needs_masks=True) == [
        f"{tmp_path / 'b.png'}: anomalous sample has no mask (pixel metrics need one) (test/c)"]


def test_validate_raises_one_error_with_a_line_per_problem(tmp_path):
    ft.mask(tmp_path / "a_mask.png", size=(8, 8))
    ft.mask(tmp_path / "b_mask.png", marked=False)
    path = make(tmp_path, [sample("a.png", "a_mask.png"), sample("b.png", "b_mask.png")])
    with pytest.raises(MetaError) as err:
        validate(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: 2 problem(s)"
    assert lines[1].strip().startswith(str(tmp_path / "a_mask.png"))
    assert lines[2].strip().startswith(str(tmp_path / "b_mask.png"))
    assert validate(tmp_path, deep=False).classes() == ["c"]  # the folder works too; files exist


def test_validate_reports_missing_files(tmp_path):
    path = make(tmp_path, [sample("a.png", "a_mask.png")])
    (tmp_path / "a_mask.png").unlink()
    with pytest.raises(MetaError, match="a_mask.png: mask file not found"):
        validate(path)
