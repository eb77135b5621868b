"""Tests of the synthetic anomaly data set generator (tpslab.data.synthetic)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tpslab.data.meta import load_meta
from tpslab.data.synthetic import make_synthetic, make_synthetic_pair
from tpslab.data.synthetic_sample import (
    DEFECT_AREA,
    DEFECT_TYPES,
    HELDOUT_CLASSES,
    SOURCE_CLASSES,
    TRAIN_CLASSES,
    load_source,
    render_sample,
    sample_rng,
)
from tpslab.utils import TPSLabError

SMALL = dict(n_per_class=4, image_size=32, progress=False)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


@pytest.fixture(scope="module")
def all_defects(tmp_path_factory) -> Path:
    """A train-domain set with every defect type, 64 px (made once for several tests)."""
    root = tmp_path_factory.mktemp("synth") / "all"
    return make_synthetic(root, "train", n_per_class=8, image_size=64, defects=DEFECT_TYPES, seed=3, progress=False)


def test_deterministic_and_independent_of_global_state(tmp_path):
    random.seed(1)
    np.random.seed(1)
    a = make_synthetic(tmp_path / "a", "heldout", defects=DEFECT_TYPES, seed=7, **SMALL).parent
    random.seed(2)
    np.random.seed(2)
    _ = np.random.random(10)
    b = make_synthetic(tmp_path / "b", "heldout", defects=DEFECT_TYPES, seed=7, **SMALL).parent
    fa, fb = files_of(a), files_of(b)
    assert fa.keys() == fb.keys()
    assert len(fa) > 8 * 4
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]

    c = make_synthetic(tmp_path / "c", "heldout", defects=DEFECT_TYPES, seed=8, **SMALL).parent
    fc = files_of(c)
    common = [k for k in fa if k in fc and k.endswith(".png")]
    assert sum(fa[k] != fc[k] for k in common) > len(common) // 2


def test_counts_ratio_and_layout(tmp_path):
    meta = load_meta(make_synthetic(tmp_path / "d", "train", n_per_class=8, image_size=32, anomaly_ratio=0.25,
                                    progress=False))
    assert meta.splits["train"] == {}
    assert meta.classes("test") == list(TRAIN_CLASSES)
    for cls in TRAIN_CLASSES:
        samples = meta.samples("test", [cls])
        assert len(samples) == 8
        assert sum(s["anomaly"] for s in samples) == 2
        species = {s["specie_name"] for s in samples}
        assert species <= {"good", "scratch", "spot"}
        for s in samples:
            assert s["cls_name"] == cls
            specie = s["specie_name"]
            assert s["img_path"].startswith(f"{cls}/{specie}/") and s["img_path"].endswith(".png")
            if s["anomaly"]:
                assert s["mask_path"].startswith(f"{cls}/ground_truth/{specie}/")
                assert s["mask_path"].endswith("_mask.png")
                assert Path(s["mask_path"]).name[:3] == Path(s["img_path"]).name[:3]
            else:
                assert specie == "good"
                assert s["mask_path"] == ""
    # the default ratio gives half anomalous; both defect types appear
    meta = load_meta(make_synthetic(tmp_path / "e", "heldout", **SMALL))
    samples = meta.samples()
    assert len(samples) == 4 * len(HELDOUT_CLASSES)
    assert sum(s["anomaly"] for s in samples) == len(samples) // 2
    assert {s["specie_name"] for s in samples} == {"good", "scratch", "spot"}


def test_images_and_masks(all_defects):
    meta = load_meta(all_defects)
    species = set()
    for s in meta.samples():
        img = read_png(meta.path(s["img_path"]))
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
        if not s["anomaly"]:
            assert s["mask_path"] == ""
            assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])  # grey
            continue
        species.add(s["specie_name"])
        mask = read_png(meta.path(s["mask_path"]))
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        frac = (mask > 0).mean()
        assert DEFECT_AREA[0] <= frac <= DEFECT_AREA[1], (s["img_path"], frac)
        # outside the mask a grey sample stays grey
        out = mask == 0
        assert np.array_equal(img[out][:, 0], img[out][:, 2])
    assert species == set(DEFECT_TYPES)


def test_defects_change_exactly_the_masked_pixels(all_defects):
    """Rebuild every sample from its seed: the file matches, and only masked pixels changed."""
    meta = load_meta(all_defects)
    for cls in meta.classes():
        for index, s in enumerate(meta.samples("test", [cls])):
            defect = None if s["specie_name"] == "good" else s["specie_name"]
            clean, image, mask = render_sample(cls, defect, sample_rng(3, cls, index), 64, True, TRAIN_CLASSES)
            assert np.array_equal(image, read_png(meta.path(s["img_path"])))
            changed = (clean != image).any(axis=-1)
            if defect is None:
                assert not changed.any()
                continue
            assert np.array_equal(mask, read_png(meta.path(s["mask_path"])))
            inside = mask > 0
            assert not (changed & ~inside).any(), "pixels changed outside the mask"
            assert changed[inside].mean() > 0.5, (s["img_path"], changed[inside].mean())


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("size", [16, 48, 96])
def test_render_sample_every_defect_and_size(defect, size):
    for i in range(6):
        cls = HELDOUT_CLASSES[i % len(HELDOUT_CLASSES)]
        clean, image, mask = render_sample(cls, defect, np.random.default_rng(i), size, i % 2 == 0, HELDOUT_CLASSES)
        assert clean.shape == image.shape == (size, size, 3) and mask.shape == (size, size)
        inside = mask > 0
        assert inside.any()
        changed = (clean != image).any(axis=-1)
        assert not (changed & ~inside).any()
        assert changed.sum() >= 0.5 * inside.sum()
    # the same generator state gives the same sample
    a = render_sample("camera", defect, np.random.default_rng(5), size)
    b = render_sample("camera", defect, np.random.default_rng(5), size)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_colour_option(tmp_path):
    meta = load_meta(make_synthetic(tmp_path / "c", "heldout", grey=False, **SMALL))
    coffee = [read_png(meta.path(s["img_path"])) for s in meta.samples("test", ["coffee"]) if not s["anomaly"]]
    assert any(not np.array_equal(img[..., 0], img[..., 2]) for img in coffee)


def test_domains_are_disjoint():
    assert set(SOURCE_CLASSES) == {"train", "heldout"}
    assert not set(TRAIN_CLASSES) & set(HELDOUT_CLASSES)
    assert len(set(TRAIN_CLASSES)) == len(TRAIN_CLASSES) and len(set(HELDOUT_CLASSES)) == len(HELDOUT_CLASSES)
    # no source image is used twice under two names (skimage's cat is chelsea)
    seen = {}
    for cls in TRAIN_CLASSES + HELDOUT_CLASSES:
        arr = load_source(cls, grey=False)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3 and min(arr.shape[:2]) >= 100
        key = (arr.shape, arr[::7, ::7].tobytes())
        assert key not in seen, f"{cls} is the same image as {seen.get(key)}"
        seen[key] = cls
    grey = load_source("coffee", grey=True)
    assert grey.shape[-1] == 3 and np.array_equal(grey[..., 0], grey[..., 2])
    with pytest.raises(TPSLabError):
        load_source("lily")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(domain="test"),
        dict(defects=("scratch", "crack")),
        dict(defects=()),
        dict(defects=("spot", "spot")),
        dict(image_size=15),
        dict(image_size=32.0),
        dict(n_per_class=1),
        dict(n_per_class=True),
        dict(anomaly_ratio=0.0),
        dict(anomaly_ratio=1.0),
        dict(anomaly_ratio="half"),
        dict(seed=-1),
    ],
)
def test_bad_arguments(tmp_path, kwargs):
    args = dict(domain="train", n_per_class=4, image_size=32, progress=False) | kwargs
    with pytest.raises(TPSLabError) as err:
        make_synthetic(tmp_path / "x", **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_single_defect_string_is_accepted(tmp_path):
    meta = load_meta(make_synthetic(tmp_path / "s", "train", defects="spot", **SMALL))
    assert {s["specie_name"] for s in meta.samples()} == {"good", "spot"}


def test_cache_and_replace(tmp_path):
    root = tmp_path / "cached"
    meta = make_synthetic(root, "train", **SMALL)
    image = root / load_meta(meta).samples()[0]["img_path"]
    stamps = (meta.stat().st_mtime_ns, image.stat().st_mtime_ns, (root / "synthetic.json").stat().st_mtime_ns)
    inode = root.stat().st_ino
    assert make_synthetic(root, "train", **SMALL) == meta
    assert (meta.stat().st_mtime_ns, image.stat().st_mtime_ns, (root / "synthetic.json").stat().st_mtime_ns) == stamps
    assert root.stat().st_ino == inode
    assert json.loads((root / "synthetic.json").read_text())["n_per_class"] == 4

    # other arguments: replaced, nothing of the old set left, no temporaries left
    (root / "stale.txt").write_text("old")
    make_synthetic(root, "train", **(SMALL | dict(n_per_class=6)))
    assert len(load_meta(meta).samples()) == 6 * len(TRAIN_CLASSES)
    assert not (root / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cached"]


def test_never_overwrites_other_data(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.png").write_bytes(b"x")
    with pytest.raises(TPSLabError, match="not a synthetic data set"):
        make_synthetic(root, "train", **SMALL)
    assert (root / "precious.png").read_bytes() == b"x"
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    load_meta(make_synthetic(empty, "train", **SMALL))


def test_pair(tmp_path):
    metas = make_synthetic_pair(tmp_path / "pair", **SMALL)
    assert set(metas) == {"train", "heldout"}
    assert metas["train"] == tmp_path / "pair" / "train-domain" / "meta.json"
    assert metas["heldout"] == tmp_path / "pair" / "heldout-domain" / "meta.json"
    assert load_meta(metas["train"]).classes() == list(TRAIN_CLASSES)
    assert load_meta(metas["heldout"]).classes() == list(HELDOUT_CLASSES)
    with pytest.raises(TPSLabError):
        make_synthetic_pair(tmp_path / "pair2", domain="train", **SMALL)
