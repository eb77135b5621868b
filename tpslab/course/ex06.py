"""Checks of notebook 06's exercises: stratified percentile bootstrap intervals, images resampled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tpslab.course.checks import Mistake, exercise, expect, seeds
from tpslab.metrics import pixel_auroc
from tpslab.metrics.bootstrap import image_samples, interval, resample_counts

N_BOOT = 50


def _class(seed: int, n: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2 == 1).astype(float)
    scores = rng.random(n) + 0.4 * labels
    masks = np.zeros((n, 8, 8))
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, 5, 2)
        masks[i, r:r + 3, c:c + 3] = 1
    maps = masks * rng.uniform(0.1, 0.6, (n, 1, 1)) + 0.3 * rng.random(masks.shape) + rng.normal(0, 0.4, (n, 1, 1))
    return labels, scores, masks, maps


@exercise("e6.1", "a stratified percentile bootstrap interval of the image AUROC")
def auroc_interval(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(labels, scores, n_boot, seed, level) -> (low, high)`` with resample_counts' stratified draws."""
    cases = seeds(hidden)[:2] + seeds(hidden)[4:]
    for seed in cases:
        labels, scores, _, _ = _class(seed)
        samples = image_samples(labels, scores, resample_counts(labels, N_BOOT, seed))["image_auroc"]
        want = interval(samples, 0.9)
        got = fn(labels.copy(), scores.copy(), N_BOOT, seed, 0.9)
        expect(np.asarray(got, dtype=float), want, {
            "for level 0.9 take the 5th and 95th percentiles, (1 - level) / 2 and (1 + level) / 2":
                np.quantile(samples, [0.1, 0.9]),
        }, "draw the resamples with resample_counts(labels, n_boot, seed) (normal and anomalous images apart), "
           "score each with the images repeated by their counts, take numpy's percentiles")
    if hidden:  # an all-normal class: AUROC undefined in every resample
        labels = np.zeros(6)
        got = np.asarray(fn(labels, np.arange(6.0), 20, 0, 0.9), dtype=float)
        if not np.isnan(got).all():
            raise Mistake("a class without anomalous image has no AUROC: the interval is (nan, nan)")
    return len(cases) + hidden


def reference_pixel_interval(masks: np.ndarray, maps: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The 95% interval of the pixel AUROC with images (not pixels) resampled, stratified by image label."""
    counts = resample_counts(masks.reshape(len(masks), -1).max(1), n_boot, seed)  # (K, N)
    stats = [pixel_auroc(np.repeat(masks, c, 0), np.repeat(maps, c, 0)) for c in counts]
    return np.asarray(interval(np.asarray(stats), 0.95))


@exercise("e6.2", "a pixel AUROC interval that resamples images")
def pixel_interval(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(masks (N, H, W), maps, n_boot, seed) -> (low, high)``: 95%, whole images resampled, stratified."""
    cases = seeds(hidden)[:2] + seeds(hidden)[4:5]
    for seed in cases:
        _, _, masks, maps = _class(seed)
        want = reference_pixel_interval(masks, maps, 40, seed)
        got = np.asarray(fn(masks.copy(), maps.copy(), 40, seed), dtype=float)
        if got.shape == (2,) and got[1] - got[0] < 0.7 * (want[1] - want[0]):
            raise Mistake("your interval is too narrow: a bootstrap that resamples pixels instead of images "
                          "treats neighbouring pixels as independent; resample whole images")
        expect(got, want, {}, "resample_counts on the image labels (mask.max() > 0.5), np.repeat the images "
                              "by their counts, pixel_auroc of each resample, then interval(stats, 0.95)")
    return len(cases)
