"""Tests for tpslab.metrics: agreement with scikit-learn and with a slow reference AUPRO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from tpslab import metrics

# --------------------------------------------------------------------------- helpers


def blob_masks(rng: np.random.Generator, n: int, size: int, sigma: float = 1.5, q: float = 0.8) -> np.ndarray:
    """Random blob masks: smoothed noise thresholded at its q-quantile (several regions per image)."""
    noise = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, sigma, sigma))
    return (noise > np.quantile(noise, q)).astype(np.float32)


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Slow AUPRO straight from the definition: one boolean prediction per distinct threshold."""
    gt = masks > 0.5
    regions = []  # list of boolean masks, one per connected component of each image
    for i in range(len(gt)):
        labelled, n = ndimage.label(gt[i], structure=np.ones((3, 3)))
        for r in range(1, n + 1):
            region = np.zeros_like(gt)
            region[i] = labelled == r
            regions.append(region)
    normal = ~gt
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        predicted = maps >= t
        fpr = (predicted & normal).sum() / normal.sum()
        pro = np.mean([(predicted & region).sum() / region.sum() for region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


# --------------------------------------------------------------------------- image and pixel metrics vs sklearn


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_image_metrics_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = rng.random(40) + 0.3 * labels
    if ties:
        scores = np.round(scores, 1)
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert metrics.image_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert metrics.image_metrics(labels, scores) == {
        "image_auroc": metrics.image_auroc(labels, scores),
        "image_ap": metrics.image_ap(labels, scores),
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_pixel_metrics_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 3, 16)
    maps = masks * rng.uniform(0.2, 1.0) + rng.random(masks.shape)
    if ties:
        maps = np.round(maps, 1)
    if seed % 2:
        maps = maps.astype(np.float32)  # float32 maps are sorted as they are, not cast
    y, s = masks.ravel() > 0.5, maps.ravel()
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert metrics.pixel_ap(masks, maps) == pytest.approx(average_precision_score(y, s), abs=1e-9)
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    assert metrics.pixel_f1_max(masks, maps) == pytest.approx(f1.max(), abs=1e-9)


def test_pixel_metrics_dict_and_torch_input() -> None:
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 2, 16)
    maps = masks + rng.random(masks.shape)
    out = metrics.pixel_metrics(torch.from_numpy(masks), torch.from_numpy(maps))
    assert set(out) == {"pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1_max"}
    assert out["pixel_auroc"] == pytest.approx(metrics.pixel_auroc(masks, maps), abs=1e-12)
    assert out["pixel_aupro"] == pytest.approx(metrics.aupro(masks, maps), abs=1e-12)
    assert out["pixel_ap"] == pytest.approx(metrics.pixel_ap(masks, maps), abs=1e-12)
    assert out["pixel_f1_max"] == pytest.approx(metrics.pixel_f1_max(masks, maps), abs=1e-12)
    half = torch.from_numpy(maps).to(torch.bfloat16)
    assert metrics.pixel_auroc(masks, half) == pytest.approx(metrics.pixel_auroc(masks, half.float().numpy()))
    authors = metrics.pixel_metrics(masks, maps, aupro_method="authors")["pixel_aupro"]
    assert authors == pytest.approx(metrics.aupro(masks, maps, method="authors"), abs=1e-12)
    assert authors != out["pixel_aupro"]


def test_masks_are_binarised_at_half() -> None:
    masks = np.array([[[0.0, 0.4, 0.6, 1.0]]])
    maps = np.array([[[0.1, 0.9, 0.2, 0.8]]])
    # positives are the pixels with mask 0.6 and 1.0 (scores 0.2, 0.8) vs negatives (0.1, 0.9): 2 of 4 pairs
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.5)
    assert metrics.image_auroc([0.2, 0.9], [0.3, 0.1]) == 0.0


def test_tie_at_the_top_score() -> None:
    # The highest score is shared by a normal and an anomalous pixel: the ROC starts with a diagonal step.
    masks = np.array([[[0, 1], [0, 1]]])
    maps = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.5, abs=1e-12)
    assert metrics.pixel_ap(masks, maps) == pytest.approx(0.5, abs=1e-12)
    # AUPRO: (0,0) -> (1/2, 1/2) -> (1, 1); area to 0.3 = 0.3 * 0.15 = 0.045, normalised 0.15
    assert metrics.aupro(masks, maps) == pytest.approx(0.15, abs=1e-12)


# --------------------------------------------------------------------------- AUPRO


@pytest.mark.parametrize("case", range(20))
def test_aupro_exact_matches_reference(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    masks = blob_masks(rng, 3, 12, sigma=rng.uniform(1.0, 2.0), q=rng.uniform(0.7, 0.9))
    masks[rng.integers(0, 3)] = 0  # one image without anomaly
    if not masks.any():
        masks[0, 2:5, 3:6] = 1
    maps = masks + rng.uniform(0.3, 1.5) * rng.standard_normal(masks.shape)
    if case % 2:
        maps = np.round(maps, 1)  # heavy ties
    fpr_limit = [0.3, 0.05, 0.5, 1.0][case % 4]
    expected = reference_aupro(masks, maps, fpr_limit)
    assert 0.0 < expected < 1.0
    assert metrics.aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_aupro_uses_eight_connectivity() -> None:
    masks = np.zeros((1, 4, 4))
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = masks[0, 1, 3] = 1  # one region diagonally touching
    maps = -masks  # normal pixels score 0, above the region ...
    maps[0, 0, 0] = 1.0  # ... except the corner pixel, found first
    # 8-connectivity: a single region of 4 pixels, PRO = 1/4 until every normal pixel is predicted.
    # (4-connectivity would give two regions and PRO = (1 + 0) / 2.)
    assert metrics.aupro(masks, maps, fpr_limit=0.5) == pytest.approx(0.25)


def test_perfect_inverted_and_random_maps() -> None:
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 3, 32)
    assert metrics.aupro(masks, masks) == pytest.approx(1.0, abs=1e-9)
    assert metrics.pixel_auroc(masks, masks) == 1.0
    assert metrics.pixel_ap(masks, masks) == 1.0
    assert metrics.pixel_f1_max(masks, masks) == 1.0
    assert metrics.aupro(masks, 1 - masks) == pytest.approx(0.0, abs=1e-12)
    assert metrics.pixel_auroc(masks, 1 - masks) == pytest.approx(0.0, abs=1e-12)

    big = blob_masks(rng, 4, 64, q=0.5)
    noise = rng.random(big.shape)
    assert abs(metrics.pixel_auroc(big, noise) - 0.5) < 0.02
    assert abs(metrics.aupro(big, noise) - 0.15) < 0.03  # PRO ~ FPR on random maps: area 0.3^2 / 2 / 0.3


@pytest.mark.filterwarnings("error")  # NaN by design, not by 0/0 arithmetic
def test_nan_cases() -> None:
    normal = np.zeros((2, 8, 8))
    maps = np.random.default_rng(0).random((2, 8, 8))
    for fn in (metrics.pixel_auroc, metrics.pixel_ap, metrics.pixel_f1_max, metrics.aupro):
        assert math.isnan(fn(normal, maps))
    assert math.isnan(metrics.aupro(np.ones((2, 8, 8)), maps))  # no normal pixel
    assert math.isnan(metrics.aupro(normal, maps, method="authors"))
    assert all(math.isnan(v) for v in metrics.pixel_metrics(normal, maps).values())
    assert math.isnan(metrics.image_auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.image_ap([0, 0], [0.1, 0.2]))


def test_aupro_rejects_bad_arguments() -> None:
    masks = np.zeros((1, 4, 4))
    with pytest.raises(ValueError):
        metrics.aupro(masks, masks, fpr_limit=0.0)
    with pytest.raises(ValueError):
        metrics.aupro(masks, masks, method="fast")
    with pytest.raises(ValueError):
        metrics.aupro(masks, np.zeros((1, 4, 5)))


def test_aupro_authors_hand_computed() -> None:
    # One image, one row: a region of 2 pixels (scores 0.9, 0.5) and 4 normal pixels (0.7, 0.3, 0.1, 0.0).
    masks = np.array([[[1, 1, 0, 0, 0, 0]]], dtype=float)
    maps = np.array([[[0.9, 0.5, 0.7, 0.3, 0.1, 0.0]]])
    # Thresholds linspace(0, 0.9, 3) = 0.9, 0.45, 0 with map >= t:
    #   t=0.9 : FPR 0,   PRO 1/2  (the pixel at 0.9 itself counts: >=, not >)
    #   t=0.45: FPR 1/4, PRO 1
    #   t=0   : FPR 1,   PRO 1    (dropped: FPR > 0.3)
    # FPRs / 0.25 -> (0, 1); trapezoid area = (0.5 + 1) / 2 = 0.75.
    assert metrics.aupro(masks, maps, method="authors", num_thresholds=3) == pytest.approx(0.75, abs=1e-12)
    # A point exactly at the limit is kept (FPR <= limit).
    assert metrics.aupro(masks, maps, fpr_limit=0.25, method="authors", num_thresholds=3) == pytest.approx(0.75)
    # Exact curve: (0,0) (0,.5) (.25,.5) (.25,1) (.5,1) ...; area to 0.3 = .25*.5 + .05*1 = 0.175.
    assert metrics.aupro(masks, maps) == pytest.approx(0.175 / 0.3, abs=1e-12)
    # With 4 thresholds (0.9, 0.6, 0.3, 0): FPRs 0, 1/4, 1/2, 1 -> kept (0, .5), (1/4, .5); area 0.5.
    assert metrics.aupro(masks, maps, method="authors", num_thresholds=4) == pytest.approx(0.5, abs=1e-12)


def test_aupro_authors_close_to_exact_on_smooth_maps() -> None:
    rng = np.random.default_rng(3)
    masks = blob_masks(rng, 4, 48, sigma=3.0, q=0.85)
    maps = ndimage.gaussian_filter(masks + 0.8 * rng.standard_normal(masks.shape), (0, 2, 2))
    exact = metrics.aupro(masks, maps)
    authors = metrics.aupro(masks, maps, method="authors")
    assert 0.2 < exact < 0.95
    assert authors != exact
    assert abs(authors - exact) < 0.05
