"""Tests for tpslab.metrics: agreement with scikit-learn and with a slow reference AUPRO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

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


def reference_cal_pro_score(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, steps: int = 200,
                            at_most: int | None = None) -> float:
    """Slow AUPRO of the reference code's definition (docs/baselines.md#section-6), one threshold at a time.

    Thresholds ``np.arange(min, max, (max - min) / steps)``, ``map > t``, regions from
    ``skimage.measure.label`` (default connectivity), FPR over all normal pixels, points with
    ``FPR < fpr_limit``, FPRs min-max rescaled, ``sklearn.metrics.auc``. ``at_most`` truncates the
    threshold list (only to show that a test depends on its last element).
    """
    gt = (masks > 0.5).astype(np.uint8)
    low, high = maps.min(), maps.max()
    fprs, pros = [], []
    for t in np.arange(low, high, (high - low) / steps)[:at_most]:
        predicted = maps > t
        overlaps = []
        for image, mask in zip(predicted, gt):
            for region in measure.regionprops(measure.label(mask)):
                rows, cols = region.coords[:, 0], region.coords[:, 1]
                overlaps.append(image[rows, cols].sum() / region.area)
        fprs.append(np.logical_and(gt == 0, predicted).sum() / (gt == 0).sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < fpr_limit
    f = fprs[keep]
    return float(auc((f - f.min()) / (f.max() - f.min()), pros[keep]))


def brute_pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """AUROC / AP / F1-max by scikit-learn on float64 copies of all pixels, exact AUPRO by ``reference_aupro``."""
    y, s = masks.ravel() > 0.5, maps.astype(np.float64).ravel()
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"pixel_auroc": roc_auc_score(y, s), "pixel_aupro": reference_aupro(masks, maps.astype(np.float64), 0.3),
            "pixel_ap": average_precision_score(y, s), "pixel_f1_max": float(f1.max())}


def random_case(seed: int, n: int = 3, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Blob masks (one image without anomaly) and noisy maps; odd seeds have heavy ties."""
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, n, size, sigma=rng.uniform(1.0, 2.0), q=rng.uniform(0.7, 0.9))
    masks[rng.integers(0, n)] = 0
    if not masks.any():
        masks[0, 2:5, 3:6] = 1
    maps = masks + rng.uniform(0.3, 1.5) * rng.standard_normal(masks.shape)
    return masks, np.round(maps, 1) if seed % 2 else maps


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
    # Overlapping score ranges (with maps = masks + U(0, 1) both AUPROs are 1): the method reaches aupro.
    maps = masks * 0.5 + rng.random(masks.shape)
    authors = metrics.pixel_metrics(masks, maps, aupro_method="authors")["pixel_aupro"]
    assert authors == pytest.approx(metrics.aupro(masks, maps, method="authors"), abs=1e-12)
    assert authors != metrics.pixel_metrics(masks, maps)["pixel_aupro"]


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


def test_aupro_authors_close_to_exact_on_smooth_maps() -> None:
    rng = np.random.default_rng(3)
    masks = blob_masks(rng, 4, 48, sigma=3.0, q=0.85)
    maps = ndimage.gaussian_filter(masks + 0.8 * rng.standard_normal(masks.shape), (0, 2, 2))
    exact = metrics.aupro(masks, maps)
    authors = metrics.aupro(masks, maps, method="authors")
    assert 0.2 < exact < 0.95
    assert authors != exact
    assert abs(authors - exact) < 0.05


# --------------------------------------------------------------------------- AUPRO as the references compute it


def test_aupro_authors_hand_computed() -> None:
    # One row of 10 pixels: region A = pixels 0-1 (scores 1, 1/2), region B = pixel 3 (3/4),
    # 7 normal pixels (3/4, 1/2, 1/4, 1/4, 0, 0, 0). min 0, max 1, 4 steps: thresholds 0, 1/4, 1/2, 3/4.
    masks = np.array([[[1, 1, 0, 1, 0, 0, 0, 0, 0, 0]]], dtype=np.uint8)
    maps = np.array([[[1.0, 0.5, 0.75, 0.75, 0.5, 0.25, 0.25, 0.0, 0.0, 0.0]]])
    # map > t (strict):  t=3/4: A 1/2, B 0 -> PRO 1/4, FPR 0   (B's 3/4 is not > 3/4)
    #                    t=1/2: A 1/2, B 1 -> PRO 3/4, FPR 1/7
    #                    t=1/4: A 1,   B 1 -> PRO 1,   FPR 2/7 (< 0.3: kept)
    #                    t=0  :                        FPR 4/7 (dropped)
    # FPRs rescaled by (f - 0) / (2/7): 0, 1/2, 1; area = 1/2 (1/4 + 3/4) / 2 + 1/2 (3/4 + 1) / 2 = 0.6875.
    assert metrics.aupro(masks, maps, method="authors", num_thresholds=4) == pytest.approx(0.6875, abs=1e-12)
    # FPR 2/7 is not < 2/7: two points left, (0, 1/4) and (1, 3/4) after rescaling: area 1/2.
    assert metrics.aupro(masks, maps, fpr_limit=2 / 7, method="authors", num_thresholds=4) == pytest.approx(0.5)
    assert reference_cal_pro_score(masks, maps, 0.3, 4) == pytest.approx(0.6875, abs=1e-12)
    # Exact: (0,0) (0,1/4) (1/7,3/4) (2/7,1) (4/7,1): area to 0.3 = (0.5 + 0.875) / 7 + 0.3 - 2/7, over 0.3.
    assert metrics.aupro(masks, maps) == pytest.approx((0.3 - 0.625 / 7) / 0.3, abs=1e-12)
    # A perfect detector: every kept FPR is 0, the reference divides 0 by 0.
    assert math.isnan(metrics.aupro(masks, masks.astype(float), method="authors"))
    assert math.isnan(metrics.aupro(masks, np.ones(masks.shape), method="authors"))  # constant maps


@pytest.mark.parametrize("case", range(12))
def test_aupro_authors_matches_reference(case: int) -> None:
    masks, maps = random_case(200 + case)
    maps = maps.astype([np.float64, np.float32, np.float16][case % 3])
    fpr_limit, steps = [(0.3, 200), (0.3, 37), (0.5, 200), (0.1, 200)][case % 4]
    expected = reference_cal_pro_score(masks, maps, fpr_limit, steps)
    assert metrics.aupro(masks, maps, fpr_limit=fpr_limit, method="authors", num_thresholds=steps) == pytest.approx(
        expected, abs=1e-9)


@pytest.mark.parametrize("high", [0.13, 0.94])
def test_aupro_authors_uses_numpys_arange(high: float) -> None:
    # (max - min) / 200 steps: numpy's arange gives 201 thresholds here, the last one equal to the
    # max (0.13: the max pixel is not > it) or just under it (0.94: it is).
    thresholds = np.arange(0.0, high, high / 200)
    assert thresholds.size == 201
    masks, maps = random_case(7, n=2, size=10)
    maps = 0.9 * high * (maps - maps.min()) / (maps.max() - maps.min())
    # Only two pixels above the 200th threshold: an anomalous one at the max, a normal one at the 201st threshold.
    maps.flat[np.flatnonzero(masks)[0]] = high
    maps.flat[np.flatnonzero(masks == 0)[0]] = thresholds[-1]
    expected = reference_cal_pro_score(masks, maps)
    assert metrics.aupro(masks, maps, method="authors") == pytest.approx(expected, abs=1e-9)
    # The 201st point counts: the area differs with it left out.
    assert expected != pytest.approx(reference_cal_pro_score(masks, maps, at_most=200), abs=1e-3)


# --------------------------------------------------------------------------- one pass, float16, streaming


@pytest.mark.parametrize("seed", range(8))
def test_pixel_metrics_match_brute_force(seed: int) -> None:
    masks, maps = random_case(300 + seed, n=3, size=14)
    maps = maps.astype([np.float64, np.float32, np.float16, np.float16][seed % 4])
    out = metrics.pixel_metrics(masks.astype([np.float32, bool, np.uint8, np.float64][seed % 4]), maps)
    expected = brute_pixel_metrics(masks, maps)
    assert list(out) == ["pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1_max"]
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert metrics.aupro(masks, maps) == pytest.approx(expected["pixel_aupro"], abs=1e-9)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 0.5, 1.0])
def test_aupro_tail_selection_with_ties_at_the_bound(fpr_limit: float) -> None:
    # Integer scores: hundreds of normal pixels share the score at the normal pixels' 70th percentile.
    rng = np.random.default_rng(5)
    masks = blob_masks(rng, 3, 20, q=0.85)
    maps = np.floor(4 * rng.random(masks.shape) + 2 * masks)
    normal = maps[masks == 0]
    bound = np.sort(normal)[::-1][int(fpr_limit * normal.size) + 1] if fpr_limit < 1 else normal.min()
    assert np.count_nonzero(normal == bound) > 50
    expected = reference_aupro(masks, maps, fpr_limit)
    assert metrics.aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)
    assert metrics.aupro(masks, maps.astype(np.float16), fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)
    # Positives all under the bound (an inverted detector): the curve past the limit is cut, exactly.
    inverted = -maps
    expected = reference_aupro(masks, inverted, fpr_limit)
    assert metrics.aupro(masks, inverted, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_constant_maps_single_image_and_empty_images() -> None:
    masks = np.zeros((1, 6, 6))
    masks[0, 1:3, 1:3] = 1
    flat = np.full(masks.shape, 0.25, dtype=np.float16)
    out = metrics.pixel_metrics(masks, flat)
    # One threshold: everything predicted. AUROC 1/2, AP = precision = 4/36, F1 = 2*4/(4+32+4), AUPRO
    # a straight line from (0,0) to (1,1): mean height 0.15 up to 0.3.
    assert out == pytest.approx({"pixel_auroc": 0.5, "pixel_aupro": 0.15, "pixel_ap": 4 / 36, "pixel_f1_max": 0.2})
    assert out == pytest.approx(brute_pixel_metrics(masks, flat), abs=1e-12)
    # Appending images without anomaly changes only FPR denominators; an all-empty stack is NaN.
    rng = np.random.default_rng(1)
    maps = rng.random((3, 6, 6))
    stacked = np.concatenate([masks, np.zeros((2, 6, 6))])
    assert metrics.pixel_metrics(stacked, maps) == pytest.approx(brute_pixel_metrics(stacked, maps), abs=1e-9)
    assert all(math.isnan(v) for v in metrics.pixel_metrics(np.zeros((2, 6, 6)), maps[:2]).values())
    # (H, W) input is one image.
    assert metrics.pixel_auroc(masks[0], maps[0]) == pytest.approx(metrics.pixel_auroc(masks, maps[:1]))


def test_float16_keeps_ties_exact() -> None:
    # float16 rounds nearby float32 scores onto the same value: ties must be counted as ties.
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, 4, 24)
    maps = (0.5 + 0.001 * rng.standard_normal(masks.shape) + 0.0005 * masks).astype(np.float16)
    assert np.unique(maps).size < 60
    maps.flat[0], maps.flat[1] = -0.0, 0.0  # signed zeros are one value
    expected = brute_pixel_metrics(masks, maps)
    for out in (metrics.pixel_metrics(masks, maps), metrics.pixel_metrics(masks, torch.from_numpy(maps))):
        assert out == pytest.approx(expected, abs=1e-9)


def test_benchmark_baselines_agree() -> None:
    # benchmarks/bench_metrics.py times tpslab against these copies; they must compute the same numbers.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    masks, maps = bench.make_class(3, 32)
    assert metrics.aupro(masks, maps, method="authors") == pytest.approx(bench.reference_loop_aupro(masks, maps),
                                                                        abs=1e-9)
    assert metrics.pixel_metrics(masks, maps) == pytest.approx(bench.old_pixel_metrics(masks, maps), abs=1e-9)
    assert metrics.pixel_metrics(masks, maps) == pytest.approx(brute_pixel_metrics(masks, maps), abs=1e-9)


def test_evaluation_does_not_import_scikit_learn() -> None:
    """Scikit-learn takes ~0.8 s to import: the evaluation path (and its image metrics) must not need it."""
    import subprocess
    import sys

    code = "import sys, tpslab.evaluation.evaluate, tpslab.metrics; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
