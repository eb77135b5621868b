"""tpslab.backbone.cache: content keys, hits and misses, invalidation, eviction, warm = cold training, the CLI."""

from __future__ import annotations

import os

import pytest
import torch

import tpslab
from tpslab.backbone import cache as fc
from tpslab.cli import main
from tpslab.data.dataset import AnomalyDataset, per_class_subset
from tpslab.data.synthetic import make_synthetic
from tpslab.methods import build_method
from tpslab.methods.train import TrainConfig, train


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A fresh cache folder and 16 synthetic images (2 per class) of our own (their mtimes get changed)."""
    monkeypatch.setenv("TPSLAB_CACHE", str(tmp_path / "cache"))
    meta = make_synthetic(tmp_path / "data", domain="train", n_per_class=2, image_size=64, progress=False)
    return AnomalyDataset(meta, 64)


def _encode(model, ds, store):
    return fc.encode_cached(model, ds, 4, torch.device("cpu"), store)


def test_hit_miss_and_same_features(small):
    model = tpslab.build_model(seed=0)
    cold = fc.FeatureStore(model)
    feats, masks, labels, has_mask = _encode(model, small, cold)
    assert (cold.hits, cold.misses) == (0, len(small))
    warm = fc.FeatureStore(model)
    feats2, masks2, labels2, has_mask2 = _encode(model, small, warm)
    assert (warm.hits, warm.misses) == (len(small), 0)
    assert torch.equal(feats.embedding, feats2.embedding)
    assert all(torch.equal(a, b) for a, b in zip(feats.patches, feats2.patches, strict=True))
    assert torch.equal(masks, masks2) and torch.equal(labels, labels2) and torch.equal(has_mask, has_mask2)
    direct = model.encode_images(torch.stack([small[i]["image"] for i in range(4)]))
    torch.testing.assert_close(feats.patches[0][:4], direct.patches[0])  # tiny model: float32 storage
    sub = _encode(model, per_class_subset(small, 1), fc.FeatureStore(model))  # a subset reuses the entries
    assert sub[0].embedding.shape[0] == 8


def test_keys_follow_what_the_features_depend_on(small):
    tps = tpslab.build_model(seed=0)
    keys = {fc.FeatureStore(m).dir.name for m in (tps, tpslab.build_model(seed=0, prompts="fixed", pathway=False))}
    assert len(keys) == 1  # ablation rows share CLIP's features
    others = [tpslab.build_model(seed=1), tpslab.build_model(seed=0, image_size=32),
              tpslab.build_model(seed=0, variant="authors-code"),
              build_method("anomalyclip", backbone="tpslab-tiny", pretrained=None, seed=0)]
    assert len({fc.FeatureStore(m).dir.name for m in [tps, *others]}) == 5


def test_features_of_other_feature_code_are_never_read(monkeypatch):
    """An older checkout sharing the cache (other backbone/model code) writes under another key."""
    model = tpslab.build_model(seed=0)
    assert fc.model_spec(model)["code"] == fc.feature_code_digest()
    mine = fc.FeatureStore(model).dir.name
    monkeypatch.setattr(fc, "feature_code_digest", lambda: "code-of-another-checkout")
    assert fc.FeatureStore(model).dir.name != mine


def test_a_changed_file_is_encoded_again(small):
    model = tpslab.build_model(seed=0)
    _encode(model, small, fc.FeatureStore(model))
    path = small.meta.path(small.samples[3]["img_path"])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = fc.FeatureStore(model)
    _encode(model, small, again)
    assert (again.hits, again.misses) == (len(small) - 1, 1)


def test_eviction_removes_least_recently_used(small):
    model = tpslab.build_model(seed=0)
    _encode(model, small, fc.FeatureStore(model))
    files = sorted(fc.entries(), key=lambda e: str(e[0]))
    for age, (path, _) in enumerate(files):  # the first files are the oldest
        os.utime(path, ns=(10**18 + age * 10**9, 10**18 + age * 10**9))
    size = files[0][1].st_size
    removed = fc.evict(limit=sum(st.st_size for _, st in files) - 2 * size)
    left = {p for p, _ in fc.entries()}
    assert removed == 2 and files[0][0] not in left and files[1][0] not in left and files[2][0] in left
    assert fc.evict(limit=0) == len(files) - 2 and fc.entries() == []


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_training_from_a_warm_cache_equals_cold(small, tmp_path, dtype, capsys):
    """Cold runs train on the features as stored, so warm = cold exactly, whatever the storage dtype."""
    cfg = TrainConfig(epochs=1, batch_size=8, lr_pathway=1e-3, cache_features=True, cache_dtype=dtype, device="cpu")
    models = []
    for run in ("cold", "warm"):
        model = tpslab.build_model(seed=0)
        capsys.readouterr()
        train(model, small, cfg, tmp_path / run, progress=False)
        lines = capsys.readouterr().out.splitlines()
        assert any(("0 images read" if run == "cold" else f"{len(small)} images read") in x for x in lines), lines
        models.append(model.trainable_state_dict())
    for k, v in models[0].items():
        assert torch.equal(v, models[1][k]), k
    if dtype == "float32":  # float32 storage is exact: as training without the disk cache
        plain = tpslab.build_model(seed=0)
        train(plain, small, TrainConfig(**{**cfg.__dict__, "disk_cache": False}), tmp_path / "plain", progress=False)
        for k, v in plain.trainable_state_dict().items():
            assert torch.equal(v, models[0][k]), k


def test_cache_dtype_is_checked():
    with pytest.raises(tpslab.TPSLabError, match="cache_dtype"):
        TrainConfig(cache_dtype="int8")


def test_cli_cache_info_and_clear(small, capsys):
    model = tpslab.build_model(seed=0)
    _encode(model, small, fc.FeatureStore(model))
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"in {len(small)} image(s)" in out and "tpslab-tiny" in out and str(fc.cache_root()) in out
    assert main(["cache", "clear"]) == 0 and fc.entries() == []
    assert main(["cache", "info"]) == 0 and "in 0 image(s)" in capsys.readouterr().out


def test_each_entry_stores_only_its_own_image(small):
    """An entry is a view into its batch; the file must hold that image's numbers only (not the batch's)."""
    model = tpslab.build_model(seed=0)
    store = fc.FeatureStore(model)
    _encode(model, small, store)
    files = [p for p in store.dir.rglob("*.pt")]
    assert len(files) == len(small)
    data = torch.load(files[0], weights_only=True)
    for name in ("embedding", "patches", "mask"):
        t = data[name]
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
    n_patches = sum(p.shape[1] * p.shape[2] for p in model.encode_images(small[0]["image"][None]).patches)
    assert files[0].stat().st_size < 4 * n_patches * 2  # float32 patches and a little more, not 4 images' worth


def test_entry_bytes_states_the_disk_an_image_takes(small):
    model = tpslab.build_model(seed=0)
    store = fc.FeatureStore(model)
    _encode(model, small, store)
    bb = model.backbone
    predicted = store.entry_bytes(len(bb.layers), bb.grid_size, bb.embed_dim, model.image_size)
    sizes = [p.stat().st_size for p in store.dir.rglob("*.pt")]
    assert all(0.8 * predicted < s <= predicted for s in sizes), (predicted, sizes)
    paper = fc.arch_entry_bytes("ViT-L-14-336", 518)  # 4 blocks of 37 x 37 x 768 in float16 and the mask bits
    assert paper == fc.entry_bytes(4, 37, 768, 518) and 8.3e6 < paper < 8.5e6
    assert fc.arch_entry_bytes("no-such-architecture", 518) is None


@pytest.mark.parametrize("shortage", ["disk", "limit", "write"])
def test_too_little_room_trains_without_the_cache(small, tmp_path, monkeypatch, shortage, capsys):
    """No room (disk, size limit, or a failing write): training says so, runs without the cache, same result."""
    if shortage == "disk":
        monkeypatch.setattr(fc, "free_bytes", lambda root: 10**6)
    elif shortage == "limit":
        monkeypatch.setenv("TPSLAB_CACHE_LIMIT_GB", "0.00001")
    else:
        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(fc, "atomic_path", full)  # the cache's writes fail; the checkpoint's do not
    cfg = TrainConfig(epochs=1, batch_size=8, lr_pathway=1e-3, cache_features=True, cache_dtype="float32",
                      device="cpu")
    model = tpslab.build_model(seed=0)
    capsys.readouterr()
    train(model, small, cfg, tmp_path / "run", progress=False)
    lines = capsys.readouterr().out.splitlines()
    said = [x for x in lines if "training without the feature cache" in x]
    assert len(said) == 1 and ("GB" in said[0] or "failed" in said[0]), lines
    plain = tpslab.build_model(seed=0)
    train(plain, small, TrainConfig(**{**cfg.__dict__, "cache_features": False}), tmp_path / "plain", progress=False)
    for k, v in plain.trainable_state_dict().items():
        assert torch.allclose(v, model.trainable_state_dict()[k], atol=1e-6), k


def test_dry_run_and_cache_info_state_the_disk_needed(small, capsys):
    from tpslab.runs.cache_plan import describe, feature_sets
    from tpslab.runs.compare import context

    ctx, prof = context("paper", (), None, None, locate=False)
    sets = feature_sets(prof, {})  # no meta.json: the published split sizes
    mvtec = [r for r in sets if r["what"] == "tps ViT-L-14-336@518 on mvtec"]
    assert mvtec and mvtec[0]["images"] == 1725 and 14.4e9 < mvtec[0]["bytes"] < 14.7e9
    assert mvtec[0]["jobs"] > 3  # the seeds and the ablation rows share one set of entries
    assert sum(r["bytes"] for r in sets) < fc.cache_limit()  # the default limit holds the paper comparison
    assert "feature cache:" in describe(prof, {})[0] and "GB on disk" in describe(prof, {})[0]
    assert main(["cache", "info", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "8.45 MB/image" in out and "feature set(s)" in out
