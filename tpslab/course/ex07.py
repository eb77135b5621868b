"""Checks of notebook 07's exercises: WinCLIP's harmonic aggregation and MuSc's mutual scoring (MSM)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tpslab.course.checks import exercise, expect, seeds
from tpslab.methods.musc_ops import msm
from tpslab.methods.winclip import harmonic_aggregation, window_masks


def _mean_aggregation(scores: torch.Tensor, windows: torch.Tensor, grid: int) -> torch.Tensor:
    cover = torch.zeros(windows.shape[0], grid * grid)
    cover[torch.arange(windows.shape[0])[:, None], windows] = 1.0
    return ((scores @ cover) / cover.sum(0)).reshape(-1, grid, grid)


@exercise("e7.1", "WinCLIP's harmonic aggregation")
def harmonic(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(window_scores (B, n_win), windows (n_win, k*k), grid) -> (B, g, g)`` harmonic mean per patch."""
    cases = [(s, g, k) for s in seeds(hidden) for g, k in ((4, 2), (5, 3))]
    for seed, grid, k in cases:
        windows = window_masks(grid, k)
        scores = torch.rand(2, windows.shape[0], generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05
        expect(fn(scores.clone(), windows, grid), harmonic_aggregation(scores, windows, grid), {
            "that is the arithmetic mean: WinCLIP takes |W_p| / sum over covering windows of 1 / s_w":
                lambda s=scores, w=windows, g=grid: _mean_aggregation(s, w, g),
        }, "expected, per patch, the harmonic mean of the scores of the windows that contain it, (B, g, g)")
    return len(cases)


def _msm_with_self(features: torch.Tensor) -> torch.Tensor:
    n = features.shape[0]
    d = torch.cdist(features.reshape(1, -1, features.shape[-1]), features.reshape(1, -1, features.shape[-1]))[0]
    nearest = d.reshape(n, features.shape[1], n, features.shape[1]).amin(-1)  # (N, L, N)
    k1 = max(1, int(0.3 * (n - 1)))
    return nearest.sort(-1).values[..., :k1].mean(-1)


@exercise("e7.2", "MuSc's mutual scoring")
def mutual_scores(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(features (N, L, C)) -> (N, L)``: per patch, MuSc's MSM score over the other images."""
    for seed in seeds(hidden):
        feats = torch.randn(8, 9, 6, generator=torch.Generator().manual_seed(seed))
        expect(fn(feats.clone()), msm(feats), {
            "leave image i out: its own patch is at distance 0": lambda f=feats: _msm_with_self(f),
        }, "expected, per patch, its nearest-patch distance to each other image, sorted, the smallest "
           "int(0.3 * (N - 1)) averaged", atol=1e-4)
    return len(seeds(hidden))
