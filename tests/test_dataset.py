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


def test_pick_examples_anomalous_first_spread_over_classes():
    from tpslab.data.dataset import pick_examples

    labels = [0, 1, 1, 0, 1, 1, 0, 0, 1]
    classes = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    assert pick_examples(labels, classes, 6) == [1, 4, 8, 0, 3, 6]  # 3 anomalous (one per class), then 3 normal
    assert pick_examples(labels, classes, 5, n_anomalous=4) == [1, 4, 8, 2, 0]  # a class repeats only after all
    ranked = [8, 2, 5, 1, 4]  # candidates in some quality order: the best of each class comes first
    picks = pick_examples([labels[i] for i in ranked], [classes[i] for i in ranked], 2, n_anomalous=2)
    assert [ranked[i] for i in picks] == [8, 2]
    assert pick_examples([0, 0], ["a", "b"], 4) == [0, 1]  # no anomalous candidates: the group stays short


def test_per_class_subset_and_examples(tiny_data):
    from tpslab.data.dataset import load_examples, per_class_subset

    ds = AnomalyDataset(tiny_data["heldout"], 64)
    sub = per_class_subset(ds, 2)
    names = [ds.samples[i]["cls_name"] for i in sub.indices]
    assert len(sub) == 2 * len(set(names)) and all(names.count(c) == 2 for c in set(names))
    ex = load_examples(tiny_data["heldout"], 64, 4)
    assert ex.labels == [1, 1, 0, 0] and len(set(ex.classes[:2])) == 2
    assert ex.images.shape == (4, 3, 64, 64) and ex.rgb[0].shape == (64, 64, 3) and ex.rgb[0].dtype == np.uint8


def test_device_convention():
    from tpslab.utils import resolve_device

    assert str(resolve_device("cpu")) == "cpu"
    assert str(resolve_device("auto")) in ("cpu", "cuda")
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(TPSLabError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
