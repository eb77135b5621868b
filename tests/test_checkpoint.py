"""tpslab.methods.checkpoint: the format round-trips; bad files are refused with a clear reason."""

from __future__ import annotations

import pytest
import torch

import tpslab
from tpslab.data.dataset import AnomalyDataset
from tpslab.methods.checkpoint import load_checkpoint, read_checkpoint, torch_load
from tpslab.methods.train import TrainConfig, train
from tpslab.utils import TPSLabError


def run(tiny_data, out, epochs):
    model = tpslab.build_model(seed=0)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr_pathway=1e-3, cache_features=True, device="cpu")
    return model, train(model, AnomalyDataset(tiny_data["train"], 64), cfg, out, progress=False)


def test_checkpoint_round_trip(tiny_data, tmp_path, images):
    model, _ = run(tiny_data, tmp_path, epochs=1)
    again = load_checkpoint(tmp_path / "checkpoint.pt")
    torch.testing.assert_close(again.predict(images).anomaly_maps, model.predict(images).anomaly_maps)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(TPSLabError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(TPSLabError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    torch.save({"prompt_learner": {}, "class_learner": {}, "former": {}}, tmp_path / "theirs.pt")
    with pytest.raises(TPSLabError, match="load_authors_checkpoint"):
        load_checkpoint(tmp_path / "theirs.pt")


def test_checkpoint_for_another_backbone_is_refused(tiny_data, tmp_path):
    run(tiny_data, tmp_path, epochs=1)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["state"]["global_prompts.ctx"] = torch.zeros(2, 12, 768)
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(TPSLabError, match="shapes differ"):
        load_checkpoint(tmp_path / "other.pt")


def test_safe_load_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TPSLabError, match="not a readable checkpoint") as err:
        torch_load(tmp_path / "evil.pt")
    assert err.value.__cause__ is not None  # the cause is kept
