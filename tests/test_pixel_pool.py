"""The pixel pool (tpslab.metrics.pixel_pool): a class's pixel metrics from one streamed pass, on the host or a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_metrics import random_case

from tpslab import metrics
from tpslab.metrics import pixel_pool


def test_pool_streams_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pixel_pool, "_CHUNK_PIXELS", 300)  # two images per chunk
    masks, maps = random_case(11, n=7, size=12)
    for dtype in (np.float32, np.float16):
        whole = metrics.pixel_metrics(masks, maps.astype(dtype), aupro_method="authors")
        pool = metrics.PixelPool()
        for lo, hi in ((0, 1), (1, 4), (4, 7)):
            pool.update(masks[lo:hi], torch.from_numpy(maps[lo:hi].astype(dtype)))
        assert pool.compute("authors") == pytest.approx(whole, abs=1e-12)
        assert pool.compute() == pytest.approx(metrics.pixel_metrics(masks, maps.astype(dtype)), abs=1e-12)
    with pytest.raises(ValueError, match="float16"):
        pool.update(masks[:1], maps[:1].astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        metrics.pixel_auroc(masks, np.where(masks > 0, np.nan, maps))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_device_path(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    # The CUDA branch (selection, torch.sort / torch.bincount on the device), run on CPU tensors.
    monkeypatch.setattr(pixel_pool, "_is_device_tensor", lambda x: isinstance(x, torch.Tensor))
    masks, maps = random_case(12, n=4, size=12)
    maps_t = torch.from_numpy(maps).to(dtype)
    host = maps_t.float().numpy() if dtype == torch.bfloat16 else maps_t.numpy()
    for method in ("exact", "authors"):
        expected = metrics.pixel_metrics(masks, host, aupro_method=method)
        assert metrics.pixel_metrics(torch.from_numpy(masks), maps_t, aupro_method=method) == pytest.approx(
            expected, abs=1e-12)


def test_floor_to_keeps_strict_comparisons() -> None:
    # float32 scores against float64 thresholds, compared in float32 without a float64 copy of the scores.
    rng = np.random.default_rng(4)
    values = rng.random(2000).astype(np.float32)
    thresholds = np.concatenate([rng.random(500), values[:200].astype(np.float64), [1e40, -1e40]])
    floored = pixel_pool._floor_to(thresholds, np.dtype(np.float32))
    assert floored.dtype == np.float32
    assert np.array_equal(values[:, None] > thresholds[None], values[:, None] > floored[None])
    assert pixel_pool._floor_to(thresholds, np.dtype(np.float64)) is thresholds
