"""Checks of notebook 03's exercises: AUROC as a Mann-Whitney count and AUPRO up to FPR 0.3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tpslab.course.checks import exercise, expect, seeds
from tpslab.metrics import aupro, image_auroc


def _pairs(labels: np.ndarray, scores: np.ndarray, tie: float) -> float:
    a, n = scores[labels > 0.5], scores[labels <= 0.5]
    return float(((a[:, None] > n[None]) + tie * (a[:, None] == n[None])).mean())


@exercise("e3.1", "AUROC as a Mann-Whitney count")
def auroc(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(labels (N,), scores (N,)) -> float`` image AUROC, ties counted as 1/2."""
    for seed in seeds(hidden):
        rng = np.random.default_rng(seed)
        labels = (np.arange(12) % 3 == 0).astype(float)
        scores = np.round(rng.random(12) + 0.3 * labels, 1)  # rounded: ties between the classes
        expect(fn(labels.copy(), scores.copy()), image_auroc(labels, scores), {
            "ties counted as 0: a tie between an anomalous and a normal score counts 1/2": _pairs(labels, scores, 0),
            "ties counted as 1: a tie between an anomalous and a normal score counts 1/2": _pairs(labels, scores, 1),
            "count the pairs where the *anomalous* image scores higher": 1 - _pairs(labels, scores, 0.5),
        }, "expected the fraction of (anomalous, normal) pairs ordered correctly, ties 1/2")
    return len(seeds(hidden))


def toy(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-image toy: (2, 16, 16) masks with three regions of different sizes and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((2, 16, 16))
    masks[0, 2:4, 2:4] = 1
    masks[0, 9:15, 8:14] = 1
    masks[1, 5:8, 1:12] = 1
    maps = np.round(masks * rng.uniform(0.2, 0.8) + rng.random(masks.shape), 2)
    return masks, maps


def _per_image(masks: np.ndarray, maps: np.ndarray, limit: float) -> float:
    return float(np.mean([aupro(m[None], s[None], limit) for m, s in zip(masks, maps)]))


@exercise("e3.2", "AUPRO up to FPR 0.3")
def aupro_toy(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(masks (N, H, W), maps (N, H, W), fpr_limit) -> float`` the normalised AUPRO (exact thresholds)."""
    for seed in seeds(hidden):
        masks, maps = toy(seed)
        expect(fn(masks.copy(), maps.copy(), 0.3), aupro(masks, maps, 0.3), {
            "divide the area by fpr_limit (a perfect detector scores 1)": aupro(masks, maps, 0.3) * 0.3,
            "integrate only up to FPR = fpr_limit (interpolate the crossing)": aupro(masks, maps, 1.0),
            "average the overlap over every region of every image together, not image by image":
                lambda m=masks, s=maps: _per_image(m, s, 0.3),
        }, "expected the area under (FPR, PRO) from 0 to fpr_limit, divided by fpr_limit; PRO is the mean "
           "over all regions of the region's fraction predicted (map >= t)", atol=1e-6)
    return len(seeds(hidden))
