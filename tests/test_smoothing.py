"""Tests for tpslab.evaluation.smoothing: the torch Gaussian blur against scipy.ndimage.gaussian_filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from tpslab.evaluation.smoothing import gaussian_blur, reflect_indices


def scipy_blur(maps: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=truncate) for m in maps])


@pytest.mark.parametrize(("n", "h", "w", "sigma"), [
    (3, 37, 37, 4.0),  # the evaluation's setting at small size
    (2, 64, 48, 1.5),
    (2, 5, 7, 4.0),  # radius 16 > the map: repeated reflections
    (1, 1, 9, 2.0),  # a single row
    (2, 20, 20, 0.3),  # radius 1
    (1, 30, 30, 4.0 * 224 / 518),  # sigma scaled to 224 px
])
def test_matches_scipy(n: int, h: int, w: int, sigma: float) -> None:
    rng = np.random.default_rng(h * w)
    maps = rng.random((n, h, w)).astype(np.float32)
    maps[:, : h // 2] += 2.0  # a step, so the borders matter
    for backend in ("torch", "scipy", "auto"):
        got = gaussian_blur(torch.from_numpy(maps), sigma, backend=backend).numpy()
        assert got.dtype == np.float32 and got.shape == maps.shape
        np.testing.assert_allclose(got, scipy_blur(maps, sigma), rtol=0, atol=1e-5)


def test_float64_half_and_truncate() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((2, 16, 16))
    expected = scipy_blur(maps, 2.0, truncate=2.5)
    for backend in ("torch", "scipy"):
        got = gaussian_blur(torch.from_numpy(maps), 2.0, truncate=2.5, backend=backend).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-12)
        half = gaussian_blur(torch.from_numpy(maps).half(), 2.0, truncate=2.5, backend=backend)
        assert half.dtype == torch.float16
        np.testing.assert_allclose(half.float().numpy(), expected, atol=2e-3)
        # (H, W) and (N, 1, H, W) layouts are blurred per 2-D map too.
        single = gaussian_blur(torch.from_numpy(maps[0]), 2.0, backend=backend).numpy()
        np.testing.assert_allclose(single, scipy_blur(maps[:1], 2.0)[0], atol=1e-12)
        assert gaussian_blur(torch.from_numpy(maps)[:, None], 2.0, backend=backend).shape == (2, 1, 16, 16)


def test_sigma_zero_and_negative() -> None:
    maps = torch.rand(2, 6, 6)
    assert torch.equal(gaussian_blur(maps, 0.0), maps)
    with pytest.raises(ValueError):
        gaussian_blur(maps, -1.0)
    with pytest.raises(ValueError):
        gaussian_blur(maps, 1.0, backend="cuda")


def test_reflect_indices_half_sample_symmetric() -> None:
    # d c b a | a b c d | d c b a, continued for pads longer than the axis
    assert reflect_indices(4, 4).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]
    assert reflect_indices(2, 5).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    assert reflect_indices(1, 2).tolist() == [0, 0, 0, 0, 0]
    for n, radius in ((3, 7), (5, 2), (4, 13)):  # numpy's "symmetric" padding is the same extension
        assert reflect_indices(n, radius).tolist() == np.pad(np.arange(n), radius, mode="symmetric").tolist()
