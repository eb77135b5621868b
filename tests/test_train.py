"""tpslab.methods.train: the recipe, determinism, atomic checkpoints and resuming."""

from __future__ import annotations

import pytest
import torch

import tpslab
from tpslab.data.dataset import AnomalyDataset
from tpslab.methods.train import TrainConfig, epoch_order, make_optimizer, train
from tpslab.utils import TPSLabError

FAST = dict(batch_size=8, lr_pathway=1e-3, cache_features=True, device="cpu")


def run(tiny_data, out, epochs, resume=False, **model_kw):
    model = tpslab.build_model(seed=0, **model_kw)
    ds = AnomalyDataset(tiny_data["train"], 64)
    history = train(model, ds, TrainConfig(epochs=epochs, **FAST), out, resume=resume, progress=False)
    return model, history


def test_optimizer_groups_follow_the_recipe():
    model = tpslab.build_model()
    opt = make_optimizer(model, TrainConfig())
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    code = tpslab.build_model(variant="authors-code")
    assert any(p is code.text_projection for p in make_optimizer(code, TrainConfig()).param_groups[1]["params"])


def test_training_lowers_the_loss_and_writes_files(tiny_data, tmp_path):
    model, history = run(tiny_data, tmp_path, epochs=3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["seg_loss"] < history[0]["seg_loss"]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "history.csv").is_file()
    assert len((tmp_path / "train.log").read_text().splitlines()) == 3
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_same_seed_same_result(tiny_data, tmp_path):
    a, ha = run(tiny_data, tmp_path / "a", epochs=2)
    b, hb = run(tiny_data, tmp_path / "b", epochs=2)
    assert ha[-1]["loss"] == hb[-1]["loss"]
    for k, v in a.trainable_state_dict().items():
        assert torch.equal(v, b.trainable_state_dict()[k]), k


def test_resume_equals_an_uninterrupted_run(tiny_data, tmp_path):
    full, _ = run(tiny_data, tmp_path / "full", epochs=3)
    run(tiny_data, tmp_path / "cut", epochs=1)  # "interrupted" after epoch 1
    resumed, history = run(tiny_data, tmp_path / "cut", epochs=3, resume=True)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for k, v in full.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_resume_refuses_other_settings(tiny_data, tmp_path):
    run(tiny_data, tmp_path, epochs=1)
    with pytest.raises(TPSLabError, match="other model settings"):
        run(tiny_data, tmp_path, epochs=2, resume=True, variant="authors-code")


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert (epoch_order(10, 1, 0) == epoch_order(10, 1, 0)).all()
    assert not (epoch_order(10, 1, 0) == epoch_order(10, 1, 1)).all()


def test_uncached_training_matches_cached(tiny_data, tmp_path):
    """Caching the frozen features is exact: same parameters after an epoch."""
    cached, _ = run(tiny_data, tmp_path / "c", epochs=1)
    model = tpslab.build_model(seed=0)
    cfg = TrainConfig(epochs=1, **{**FAST, "cache_features": False})
    train(model, AnomalyDataset(tiny_data["train"], 64), cfg, tmp_path / "u", progress=False)
    for k, v in cached.trainable_state_dict().items():
        torch.testing.assert_close(model.trainable_state_dict()[k], v, msg=k)
