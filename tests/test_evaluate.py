"""tpslab.evaluation.evaluate and tpslab.cli.demo: per-class tables, smoothing, the end-to-end job on a tiny profile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

import tpslab
from tpslab.evaluation.evaluate import ClassPredictions, default_sigma, evaluate, score_class


def test_default_sigma_is_4px_at_518():
    assert default_sigma(518) == 4.0
    assert default_sigma(64) == pytest.approx(0.494, abs=1e-3)


def test_score_class_perfect_and_mask_less_images():
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[1, 2:4, 2:4] = 1
    maps = masks.astype(np.float32)
    p = ClassPredictions(scores=np.array([0.1, 0.9, 0.8, 0.2]), maps=maps, labels=np.array([0, 1, 1, 0]),
                         masks=masks, has_mask=np.array([True, True, False, True]), paths=list("abcd"))
    row = score_class(p)
    assert row["image_auroc"] == 100.0 and row["pixel_auroc"] == 100.0 and row["pixel_aupro"] == pytest.approx(100.0)
    p.has_mask[:] = False
    assert math.isnan(score_class(p)["pixel_auroc"])


def test_evaluate_table_layout(tiny_data):
    model = tpslab.build_model(seed=0)
    table = evaluate(model, tiny_data["heldout"], progress=False, batch_size=16)
    assert list(table.columns) == ["dataset", "class", "images", "anomalous", "image_auroc", "image_ap",
                                   "pixel_auroc", "pixel_aupro"]
    assert table["class"].iloc[-1] == "mean" and len(table) == 9
    assert table["images"].iloc[-1] == 48
    body = table.iloc[:-1]
    assert table["pixel_auroc"].iloc[-1] == pytest.approx(body["pixel_auroc"].mean())
    assert ((body[["image_auroc", "pixel_auroc"]] >= 0) & (body[["image_auroc", "pixel_auroc"]] <= 100)).all().all()
    again = evaluate(model, tiny_data["heldout"], progress=False, batch_size=5)
    pd.testing.assert_frame_equal(table, again)  # batch size does not change anything


def test_demo_end_to_end_on_a_tiny_profile(tmp_path, capsys):
    """The main job's plumbing on a profile small enough for a unit test (1 epoch, 6 images a class)."""
    from tpslab.cli.demo import run_demo
    from tpslab.profiles import PROFILE_DIR

    smoke = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    smoke["train"]["epochs"] = 1
    smoke["data"]["synthetic"]["n_per_class"] = 6
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(smoke))
    capsys.readouterr()
    result = run_demo(str(path), out=tmp_path / "out", data=tmp_path / "data", progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("held-out pixel AUROC: untrained ") and " -> trained " in lines[-2]
    assert lines[-1].startswith("held-out image AUROC: untrained ")
    assert "class token" not in lines[-1]  # the note on random weights' image AUROC: smoke runs tpslab-mini now
    assert set(result) == {"pixel_auroc_untrained", "pixel_auroc_trained", "image_auroc_untrained", "image_auroc_trained"}
    for name in ("heldout_metrics.csv", "heldout_metrics.md", "heldout_metrics.png", "heldout_metrics.pdf",
                 "training_loss.png", "examples_trained.png", "train/checkpoint.pt"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "tpslab-mini (trained on generated captions): not CLIP, not paper numbers" in \
        (tmp_path / "out" / "heldout_metrics.md").read_text()
