"""tpslab.data.images, meta and dataset: odd image files, masks, malformed meta.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tpslab.data.dataset import AnomalyDataset, mask_to_tensor
from tpslab.data.images import load_image, load_mask
from tpslab.data.meta import MetaError, load_meta, write_meta
from tpslab.utils import TPSLabError


def sample(img, mask="", anomaly=1, cls="c"):
    return {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": "d" if anomaly else "good",
            "anomaly": anomaly}


@pytest.mark.parametrize("mode,array", [
    ("L", np.full((10, 12), 128, np.uint8)),
    ("RGBA", np.zeros((10, 12, 4), np.uint8)),
    ("I;16", np.full((10, 12), 65535, np.uint16)),
])
def test_any_image_loads_as_8bit_rgb(tmp_path, mode, array):
    Image.fromarray(array).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img.mode == "RGB" and img.size == (12, 10)


def test_unreadable_and_missing_images(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(TPSLabError, match="cannot read image"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(TPSLabError, match="not found"):
        load_image(tmp_path / "none.png")


def test_masks_of_every_kind(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 255
    Image.fromarray(m).save(tmp_path / "a.png")
    Image.fromarray((m > 0).astype(np.uint8)).save(tmp_path / "b.png")  # 0/1
    Image.fromarray((m > 0).astype(np.uint8) * 3).save(tmp_path / "c.png")  # a label map (VisA)
    for name in "abc":
        assert load_mask(tmp_path / f"{name}.png").sum() == 32, name
    t = mask_to_tensor(load_mask(tmp_path / "a.png"), 16)
    assert t.shape == (16, 16) and set(t.unique().tolist()) == {0.0, 1.0}


def test_malformed_meta_files(tmp_path):
    with pytest.raises(MetaError, match="no meta.json"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(MetaError, match="not valid JSON"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"test": {"c": []}}))
    with pytest.raises(MetaError, match="empty class"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"test": {"c": [{"img_path": "x.png", "anomaly": 2}]}}))
    with pytest.raises(MetaError) as err:
        load_meta(tmp_path)
    assert "missing field 'mask_path'" in str(err.value) and "'anomaly' must be 0 or 1" in str(err.value)
    (tmp_path / "meta.json").write_text(json.dumps({"test": {"c": [sample("x.png", "x_mask.png")]}}))
    with pytest.raises(MetaError, match="x.png: img file not found"):
        load_meta(tmp_path)


def test_write_meta_validates_before_writing(tmp_path):
    with pytest.raises(MetaError):
        write_meta({"test": {"c": []}}, tmp_path)
    assert not (tmp_path / "meta.json").exists()


def test_dataset_items(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "b.png")
    write_meta({"test": {"c": [sample("a.png", "a_mask.png"), sample("b.png", "", anomaly=1),
                               sample("b.png", "", anomaly=0)]}}, tmp_path)
    ds = AnomalyDataset(tmp_path, image_size=32)
    a, b, n = ds[0], ds[1], ds[2]
    assert a["image"].shape == (3, 32, 32) and a["mask"].sum() == 32 * 32 and a["has_mask"]
    assert not b["has_mask"] and b["label"] == 1  # anomalous without mask: image metrics only
    assert n["has_mask"] and n["mask"].sum() == 0
