"""Tests for tpslab.metrics.bootstrap: weighted resample statistics against the exact metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from tpslab import metrics
from tpslab.metrics.bootstrap import PixelBootstrap, image_samples, interval, resample_counts

N_NORMAL, N_ANOMALOUS, SIZE = 5, 7, 16
LABELS = np.array([0] * N_NORMAL + [1] * N_ANOMALOUS)


def blob_masks(rng: np.random.Generator) -> np.ndarray:
    """Masks of the anomalous images: thresholded smoothed noise (several regions per image); normals empty."""
    noise = ndimage.gaussian_filter(rng.standard_normal((N_ANOMALOUS, SIZE, SIZE)), (0, 1.2, 1.2))
    anomalous = (noise > np.quantile(noise, 0.85)).astype(np.float32)
    return np.concatenate([np.zeros((N_NORMAL, SIZE, SIZE), np.float32), anomalous])


def noisy_maps(rng: np.random.Generator, masks: np.ndarray, dtype: type = np.float16, decimals: int | None = None):
    """Overlapping anomalous / normal score distributions; ``decimals`` rounds (ties across classes)."""
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    maps = ndimage.gaussian_filter(maps, (0, 0.7, 0.7))
    if decimals is not None:
        maps = np.round(maps, decimals)
    return maps.astype(dtype)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    masks = blob_masks(rng)
    n_regions = [ndimage.label(m > 0.5, structure=np.ones((3, 3)))[1] for m in masks]
    assert max(n_regions) >= 2 and min(n_regions[N_NORMAL:]) >= 1  # the region weighting matters
    scores = np.round(LABELS * 0.3 + rng.random(LABELS.size), 1)  # ties, some across classes
    return {"masks": masks, "scores": scores, "maps16": noisy_maps(rng, masks),
            "maps_tied": noisy_maps(rng, masks, decimals=2), "maps32": noisy_maps(rng, masks, np.float32)}


# --------------------------------------------------------------------------- resample_counts


def test_resample_counts_shape_strata_and_seed():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 1])
    counts = resample_counts(labels, 300, seed=3)
    assert counts.shape == (300, labels.size) and counts.dtype == np.int32
    assert (counts >= 0).all()
    assert (counts[:, labels == 0].sum(axis=1) == 4).all()
    assert (counts[:, labels == 1].sum(axis=1) == 6).all()
    assert np.array_equal(counts, resample_counts(labels, 300, seed=3))
    assert not np.array_equal(counts, resample_counts(labels, 300, seed=4))
    assert len({row.tobytes() for row in counts}) > 250  # genuinely random rows
    assert abs(counts.mean() - 1.0) < 0.1  # each image drawn once on average
    assert (counts.max(axis=1) >= 2).mean() > 0.9  # with replacement


def test_resample_counts_float_labels_binarised_at_half():
    counts = resample_counts(np.array([0.2, 0.9, 0.6, 0.0]), 50, seed=0)
    assert (counts[:, [0, 3]].sum(axis=1) == 2).all() and (counts[:, [1, 2]].sum(axis=1) == 2).all()


# --------------------------------------------------------------------------- interval


def test_interval_known_array():
    low, high = interval(np.arange(1001) / 1000)
    assert low == pytest.approx(0.025) and high == pytest.approx(0.975)
    low, high = interval(np.arange(1001) / 1000, level=0.5)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.75)


def test_interval_ignores_nan_and_all_nan():
    samples = np.append(np.arange(1001) / 1000, [np.nan] * 50)
    assert interval(samples) == pytest.approx((0.025, 0.975))
    low, high = interval(np.full(10, np.nan))
    assert math.isnan(low) and math.isnan(high)


# --------------------------------------------------------------------------- degenerate detectors


def test_perfect_detector_every_resample_is_one(data):
    rng = np.random.default_rng(1)
    masks = data["masks"]
    scores = LABELS + 0.5 * rng.random(LABELS.size)
    maps = (rng.random(masks.shape) + 2.0 * masks).astype(np.float16)
    counts = resample_counts(LABELS, 200, seed=0)
    got = {**image_samples(LABELS, scores, counts), **PixelBootstrap(masks, maps).samples(counts)}
    assert set(got) == {"image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"}
    for name, values in got.items():
        assert values.shape == (200,)
        assert np.allclose(values, 1.0, rtol=0, atol=1e-12), name
        assert interval(values) == pytest.approx((1.0, 1.0), abs=1e-12), name


def test_constant_detector_auroc_is_half(data):
    masks = data["masks"]
    counts = resample_counts(LABELS, 100, seed=0)
    image = image_samples(LABELS, np.full(LABELS.size, 0.3), counts)["image_auroc"]
    pixel = PixelBootstrap(masks, np.full(masks.shape, 0.7, np.float16)).samples(counts)["pixel_auroc"]
    for values in (image, pixel):
        assert (values == 0.5).all()
        assert interval(values) == (0.5, 0.5)
    # the PRO curve of a constant map is the diagonal from (0, 0): area 0.3**2 / 2, normalised 0.15
    maps = np.full(masks.shape, 0.7, np.float16)
    aupro = PixelBootstrap(masks, maps).samples(counts)["pixel_aupro"]
    assert np.allclose(aupro, 0.15, rtol=0, atol=1e-12) and metrics.aupro(masks, maps) == pytest.approx(0.15)


# --------------------------------------------------------------------------- image metrics


def test_image_all_ones_equal_sklearn(data):
    scores = data["scores"]
    got = image_samples(LABELS, scores, np.ones((1, LABELS.size), dtype=np.int32))
    assert got["image_auroc"][0] == pytest.approx(roc_auc_score(LABELS, scores), abs=1e-12)
    assert got["image_ap"][0] == pytest.approx(average_precision_score(LABELS, scores), abs=1e-12)
    assert got["image_auroc"][0] == pytest.approx(metrics.image_auroc(LABELS, scores), abs=1e-12)


def test_image_integer_counts_equal_repeated_images_and_sklearn_weights(data):
    scores = data["scores"]
    counts = resample_counts(LABELS, 30, seed=5)
    got = image_samples(LABELS, scores, counts)
    for k, c in enumerate(counts):
        y, s = np.repeat(LABELS, c), np.repeat(scores, c)
        assert got["image_auroc"][k] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["image_ap"][k] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got["image_ap"][k] == pytest.approx(average_precision_score(LABELS, scores, sample_weight=c),
                                                   abs=1e-12)


def test_image_missing_class_is_nan(data):
    counts = np.ones((2, LABELS.size))
    counts[0, LABELS == 1] = 0
    counts[1, LABELS == 0] = 0
    got = image_samples(LABELS, data["scores"], counts)
    assert np.isnan(got["image_auroc"]).all() and np.isnan(got["image_ap"]).all()


# --------------------------------------------------------------------------- pixel metrics


@pytest.mark.parametrize("which", ["maps16", "maps_tied"])
def test_pixel_all_ones_equal_exact_metrics(data, which):
    masks, maps = data["masks"], data[which]
    boot = PixelBootstrap(masks, maps)
    assert boot.exact and boot.edges.size == np.unique(maps).size
    got = boot.samples(np.ones((1, len(masks)), dtype=np.int32))
    assert got["pixel_auroc"][0] == pytest.approx(metrics.pixel_auroc(masks, maps), abs=1e-9)
    assert got["pixel_aupro"][0] == pytest.approx(metrics.aupro(masks, maps, method="exact"), abs=1e-9)
    assert (boot.error_bounds(np.ones((1, len(masks))))["pixel_aupro"] == 0).all()


def test_pixel_aupro_other_fpr_limit(data):
    masks, maps = data["masks"], data["maps_tied"]
    got = PixelBootstrap(masks, maps, fpr_limit=0.05).samples(np.ones(len(masks)))["pixel_aupro"][0]
    assert got == pytest.approx(metrics.aupro(masks, maps, fpr_limit=0.05), abs=1e-9)


def test_pixel_integer_counts_equal_repeated_images(data):
    masks, maps = data["masks"], data["maps_tied"]
    counts = resample_counts(LABELS, 6, seed=11)
    got = PixelBootstrap(masks, maps).samples(counts)
    for k, c in enumerate(counts):
        m, s = np.repeat(masks, c, axis=0), np.repeat(maps, c, axis=0)
        assert got["pixel_auroc"][k] == pytest.approx(metrics.pixel_auroc(m, s), abs=1e-9)
        assert got["pixel_aupro"][k] == pytest.approx(metrics.aupro(m, s), abs=1e-9)
    assert np.ptp(got["pixel_aupro"]) > 1e-3  # the resamples really differ


def test_pixel_no_anomalous_weight_is_nan(data):
    counts = np.ones((1, LABELS.size))
    counts[0, LABELS == 1] = 0
    got = PixelBootstrap(data["masks"], data["maps16"]).samples(counts)
    assert np.isnan(got["pixel_auroc"]).all() and np.isnan(got["pixel_aupro"]).all()


def test_quantile_bins_close_to_exact_and_within_bounds(data):
    masks, maps = data["masks"], data["maps32"]
    assert np.unique(maps).size > 256
    boot = PixelBootstrap(masks, maps, bins=256)
    assert not boot.exact and boot.edges.size <= 256
    ones = np.ones((1, len(masks)))
    got, bound = boot.samples(ones), boot.error_bounds(ones)
    exact = {"pixel_auroc": metrics.pixel_auroc(masks, maps), "pixel_aupro": metrics.aupro(masks, maps)}
    # the a-priori bounds of the docstring: max_b dF_b / 2 and max_b dF_b / (2 fpr_limit), with
    # dF_b < 2 ceil(M / bins) / M_normal
    max_df = 2 * math.ceil(maps.size / 256) / np.count_nonzero(masks <= 0.5)
    assert bound["pixel_auroc"][0] <= max_df / 2 and bound["pixel_aupro"][0] <= max_df / 0.6
    for name, value in exact.items():
        error = abs(got[name][0] - value)
        assert error <= bound[name][0] + 1e-12, name
        assert error < 2e-3, name  # stated tolerance for 256 bins on 3072 pixels
    # resampled: still within each resample's own bound of the exact metric of the repeated images
    counts = resample_counts(LABELS, 3, seed=2)
    got, bound = boot.samples(counts), boot.error_bounds(counts)
    for k, c in enumerate(counts):
        m, s = np.repeat(masks, c, axis=0), np.repeat(maps, c, axis=0)
        assert abs(got["pixel_auroc"][k] - metrics.pixel_auroc(m, s)) <= bound["pixel_auroc"][k] + 1e-12
        assert abs(got["pixel_aupro"][k] - metrics.aupro(m, s)) <= bound["pixel_aupro"][k] + 1e-12


def test_quantile_bins_isolate_heavy_ties():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 16, 16), np.float32)
    masks[:, 4:8, 4:8] = 1
    maps = rng.random(masks.shape).astype(np.float32)
    maps[:, :8] = 0.25  # half of all pixels tied at one score, anomalous and normal alike
    boot = PixelBootstrap(masks, maps, bins=64)
    assert not boot.exact and 0.25 in boot.edges
    assert boot.edges[np.searchsorted(boot.edges, 0.25) + 1] == maps[maps > 0.25].min()  # 0.25 alone in its bin
    got, bound = boot.samples(np.ones((1, 4)))["pixel_auroc"][0], boot.error_bounds(np.ones((1, 4)))["pixel_auroc"][0]
    assert abs(got - metrics.pixel_auroc(masks, maps)) <= bound
    # the tied bin is exact (a straight segment of the exact curve too) and adds nothing to the bound
    assert bound <= math.ceil(maps.size / 64) / np.count_nonzero(masks <= 0.5)


def test_quantile_error_bound_is_nearly_attained():
    """Worst case: two bins; the top one holds the 4 anomalous pixels above 12 normal ones.

    Exact AUPRO 1 (PRO 1 at FPR 0); binned, the chord from (0, 0) to (12/28, 1) gives
    0.3 * (0.3 / (12/28)) / 2 / 0.3 = 0.35. The bound dF dP / (2 * 0.3) = (12/28) / 0.6.
    """
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :2, :2] = 1
    maps = np.arange(32, dtype=np.float32).reshape(2, 4, 4) / 32
    maps[0, :2, :2] += 10
    boot = PixelBootstrap(masks, maps, bins=2)
    assert not boot.exact and boot.edges.size == 2
    ones = np.ones((1, 2))
    got, bound = boot.samples(ones)["pixel_aupro"][0], boot.error_bounds(ones)["pixel_aupro"][0]
    assert metrics.aupro(masks, maps) == 1.0
    assert got == pytest.approx(0.35, abs=1e-12)
    assert bound == pytest.approx((12 / 28) / 0.6, abs=1e-12)
    assert 0.85 * bound < 1.0 - got <= bound
    # pixel AUROC: 4 x 12 tied pairs count half: 1 - 24 / 112, and the bound (12/28) / 2 is attained
    got, bound = boot.samples(ones)["pixel_auroc"][0], boot.error_bounds(ones)["pixel_auroc"][0]
    assert got == pytest.approx(1 - 24 / 112, abs=1e-12) and bound == pytest.approx(1.0 - got, abs=1e-12)
