"""tpslab.evaluation.inference and the streaming evaluation: precision, workers, smoothing, float16 maps, stage times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

import tpslab
from tpslab.data.dataset import AnomalyDataset
from tpslab.evaluation.evaluate import EvalConfig, evaluate, evaluate_with, predict_dataset, score_class, smooth_maps
from tpslab.evaluation.inference import (
    StageTimer,
    cpu_bf16_attention,
    default_workers,
    resolve_precision,
    stream_maps,
)
from tpslab.utils import TPSLabError

CLS = "astronaut"  # a held-out class of the synthetic data


@pytest.fixture(scope="module")
def model():
    return tpslab.build_model(seed=0)


def test_bf16_maps_correlate_with_fp32(model, tiny_data):
    if not cpu_bf16_attention():  # no AVX-512 (or ATEN_CPU_CAPABILITY=default): a one-line error instead
        with pytest.raises(TPSLabError, match="cannot run attention in bfloat16"):
            resolve_precision("bf16", "cpu")
        return
    ds = AnomalyDataset(tiny_data["heldout"], model.image_size, classes=None)
    items = [ds[i] for i in range(16)]
    runs = {}
    for precision in ("fp32", "bf16"):
        (_, scores, maps), = list(stream_maps(model, items, 16, 0.0, "cpu", precision=precision))
        runs[precision] = (scores, maps.numpy().ravel())
    corr = np.corrcoef(runs["fp32"][1], runs["bf16"][1])[0, 1]
    assert corr > 0.999
    assert not np.array_equal(runs["fp32"][1], runs["bf16"][1])  # bf16 autocast did change the computation
    assert np.corrcoef(runs["fp32"][0], runs["bf16"][0])[0, 1] > 0.99


def test_precision_and_settings_are_checked():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(TPSLabError, match="precision"):
        resolve_precision("half", "cpu")
    for bad in ({"precision": "fp64"}, {"map_dtype": "float64"}, {"num_workers": -1}, {"num_workers": 1.5}):
        with pytest.raises(TPSLabError):
            EvalConfig.from_dict(bad)
    assert EvalConfig(device="cpu").workers == default_workers("cpu") == 0  # workers slow a CPU forward down
    assert 1 <= default_workers("cuda") <= 8
    assert EvalConfig(num_workers=0).workers == 0


def test_smooth_maps_equals_scipy_per_map():
    maps = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    want = np.stack([gaussian_filter(m, 1.5) for m in maps])
    np.testing.assert_array_equal(smooth_maps(maps, 64, 1.5), want)
    assert smooth_maps(maps, 64, 0) is maps


def test_streaming_evaluation_equals_scoring_whole_class(model, tiny_data):
    """float32 maps: the streamed pool gives exactly score_class of the whole class; float16 within 1e-2 %."""
    timer = StageTimer()
    kept = {}
    table = evaluate(model, tiny_data["heldout"], progress=False, batch_size=5, map_dtype="float32", timer=timer,
                     on_class=lambda cls, p: kept.setdefault(cls, p))
    assert set(timer.seconds) == {"load", "forward", "smoothing", "metrics"}
    for cls, p in kept.items():
        whole = predict_dataset(model, AnomalyDataset(tiny_data["heldout"], 64, classes=[cls]), 5, progress=False)
        np.testing.assert_array_equal(whole.maps, p.maps)
        row = table[table["class"] == cls].iloc[0]
        for k, v in score_class(whole).items():
            assert row[k] == pytest.approx(v, abs=1e-9, nan_ok=True), (cls, k)
    half = evaluate(model, tiny_data["heldout"], progress=False, batch_size=16,
                    on_class=lambda cls, p: kept.__setitem__(cls, p))
    assert all(p.maps.dtype == np.float32 for p in kept.values())  # the callback gets float32 maps
    body = [c for c in table.columns if c.startswith(("pixel", "image"))]
    np.testing.assert_allclose(half[body].to_numpy(float), table[body].to_numpy(float), atol=1e-2)


def test_workers_give_the_same_table(model, tiny_data):
    cfg = EvalConfig(batch_size=8, device="cpu", num_workers=1)
    with_workers = evaluate_with(model, tiny_data["heldout"], cfg, classes=[CLS], progress=False)
    without = evaluate_with(model, tiny_data["heldout"], EvalConfig(batch_size=8, device="cpu", num_workers=0),
                            classes=[CLS], progress=False)
    pd.testing.assert_frame_equal(with_workers, without)


def test_inference_mode_leaves_no_graph(model, tiny_data):
    ds = AnomalyDataset(tiny_data["heldout"], model.image_size)
    (_, _, maps), *_ = stream_maps(model, [ds[0], ds[1]], 2, 0.5, "cpu")
    assert isinstance(maps, torch.Tensor) and not maps.requires_grad and maps.dtype == torch.float32
