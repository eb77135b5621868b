"""Evaluation metrics for zero-shot anomaly detection.

Image level: AUROC and average precision (AP) of per-image scores.
Pixel level: AUROC, AP, maximal F1 and AUPRO of anomaly maps against ground
truth masks, pooled over all pixels of all images of a class.

All functions take numpy arrays or torch tensors. Ground truth is binarised
as ``value > 0.5`` (masks, as loaded by :func:`tpslab.data.images.load_mask`,
are floats in [0, 1]). Every metric returns ``float("nan")`` when it is
undefined (for instance a class with no anomalous pixel) instead of raising.

The pixel metrics sort all pixels once and read the curves off cumulative
sums, so they stay fast on ~10^8 pixels; they agree with scikit-learn's
``roc_auc_score`` / ``average_precision_score`` (same tie handling).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score

__all__ = [
    "aupro",
    "image_ap",
    "image_auroc",
    "image_metrics",
    "pixel_ap",
    "pixel_auroc",
    "pixel_f1_max",
    "pixel_metrics",
]

NAN = float("nan")


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() and x.element_size() < 4 else x  # bfloat16 has no numpy dtype
        x = x.numpy()
    return np.asarray(x)


def _prepare(truth: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binarise ``truth`` at 0.5, flatten both arrays and check they match."""
    truth, scores = _to_numpy(truth), _to_numpy(scores)
    if truth.shape != scores.shape:
        raise ValueError(f"shape mismatch: ground truth {truth.shape} vs scores {scores.shape}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    scores = scores.ravel()
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return truth.ravel() > 0.5, scores


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the polyline through the points ``(x[i], y[i])`` (trapezoidal rule)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _sort_desc(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sort: pixel order by descending score and the index of the last pixel of each tie group.

    Thresholding at the ``k``-th distinct score (``score >= t``) selects exactly
    the pixels ``order[: group_ends[k] + 1]``.
    """
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    group_ends = np.append(np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), sorted_scores.size - 1)
    return order, group_ends


def _binary_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive counts at every distinct threshold, highest threshold first."""
    order, ends = _sort_desc(scores)
    tps = np.cumsum(labels[order], dtype=np.int64)[ends]
    fps = ends + 1 - tps
    return fps, tps


def _has_both_classes(labels: np.ndarray) -> bool:
    return 0 < np.count_nonzero(labels) < labels.size


# --------------------------------------------------------------------------- image level


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of per-image anomaly scores (scikit-learn ``roc_auc_score``).

    Args:
        labels: (N,) ground truth, 1 (or > 0.5) for anomalous images.
        scores: (N,) anomaly scores, higher means more anomalous.

    Returns:
        The AUROC in [0, 1], or NaN if only one class is present.

    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _prepare(labels, scores)
    return float(roc_auc_score(y, s)) if _has_both_classes(y) else NAN


def image_ap(labels: Any, scores: Any) -> float:
    """Average precision of per-image anomaly scores (scikit-learn ``average_precision_score``).

    Args:
        labels: (N,) ground truth, 1 (or > 0.5) for anomalous images.
        scores: (N,) anomaly scores, higher means more anomalous.

    Returns:
        The AP in [0, 1], or NaN if only one class is present.
    """
    y, s = _prepare(labels, scores)
    return float(average_precision_score(y, s)) if _has_both_classes(y) else NAN


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """Image-level metrics as a dict with keys ``image_auroc`` and ``image_ap``."""
    return {"image_auroc": image_auroc(labels, scores), "image_ap": image_ap(labels, scores)}


# --------------------------------------------------------------------------- pixel level


def _pixel_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``_binary_curve`` of pooled pixels, or None if the masks contain only one label."""
    y, s = _prepare(masks, maps)
    return _binary_curve(y, s) if _has_both_classes(y) else None


def _auroc(fps: np.ndarray, tps: np.ndarray) -> float:
    return _trapezoid(np.append(0.0, fps / fps[-1]), np.append(0.0, tps / tps[-1]))


def _ap(fps: np.ndarray, tps: np.ndarray) -> float:
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1_max(fps: np.ndarray, tps: np.ndarray) -> float:
    # F1 = 2 P R / (P + R) = 2 TP / (2 TP + FP + FN), with TP + FN = number of positives
    return float(np.max(2 * tps / (tps + fps + tps[-1])))


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Area under the ROC curve over all pixels of all images, pooled.

    A pixel is a positive if its mask value is > 0.5. The ROC curve has one
    point per distinct score (threshold ``map >= t``) plus the origin, and is
    integrated with the trapezoidal rule: the same value as scikit-learn's
    ``roc_auc_score(masks.ravel() > 0.5, maps.ravel())``, ties included.

    Args:
        masks: (N, H, W) ground truth masks.
        maps: (N, H, W) anomaly maps, higher means more anomalous.

    Returns:
        The AUROC, or NaN if the masks contain only one label.

    >>> pixel_auroc([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.875
    """
    curve = _pixel_curve(masks, maps)
    return NAN if curve is None else _auroc(*curve)


def pixel_ap(masks: Any, maps: Any) -> float:
    """Average precision over all pixels of all images, pooled.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct thresholds ``t_k``
    in decreasing order (``R_0 = 0``), where ``P_k`` and ``R_k`` are the
    precision and recall of ``map >= t_k``. This step-wise sum (no
    interpolation) is scikit-learn's ``average_precision_score``, ties included.

    Args:
        masks: (N, H, W) ground truth masks.
        maps: (N, H, W) anomaly maps.

    Returns:
        The AP, or NaN if the masks contain only one label.

    >>> pixel_ap([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.8333333333333333
    """
    curve = _pixel_curve(masks, maps)
    return NAN if curve is None else _ap(*curve)


def pixel_f1_max(masks: Any, maps: Any) -> float:
    """Maximal F1 score ``2 P R / (P + R)`` over all thresholds ``map >= t``, pixels pooled.

    The thresholds are the distinct map values (the points of the
    precision-recall curve); thresholds with no true positive have F1 = 0.

    Args:
        masks: (N, H, W) ground truth masks.
        maps: (N, H, W) anomaly maps.

    Returns:
        The maximal F1, or NaN if the masks contain only one label.

    >>> pixel_f1_max([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.8
    """
    curve = _pixel_curve(masks, maps)
    return NAN if curve is None else _f1_max(*curve)


# --------------------------------------------------------------------------- AUPRO


def _pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(scores, FPR, PRO) at every distinct threshold, highest first; None if undefined.

    Each anomalous pixel of region ``r`` adds ``1 / (|r| * n_regions)`` to the
    PRO, each normal pixel adds ``1 / n_normal`` to the FPR, so one sort and
    two cumulative sums give the whole curve.
    """
    masks, maps = _to_numpy(masks), _to_numpy(maps)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W) or (H, W), got {masks.shape}")
    y, s = _prepare(masks, maps)
    y = y.reshape(masks.shape)

    # Global region ids: 0 for normal pixels, 1..n_regions for the connected
    # components (8-connectivity) of each image, numbered consecutively.
    regions = np.zeros(y.shape, dtype=np.int64)
    n_regions = 0
    for i in range(len(y)):
        labelled, n = ndimage.label(y[i], structure=np.ones((3, 3), dtype=int))
        regions[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += n
    regions = regions.ravel()
    normal = regions == 0
    n_normal = int(np.count_nonzero(normal))
    if n_regions == 0 or n_normal == 0:
        return None

    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    sizes[0] = np.inf  # normal pixels add nothing to the PRO
    pro_weight = 1.0 / (sizes[regions] * n_regions)

    order, ends = _sort_desc(s)
    pro = np.cumsum(pro_weight[order])[ends]
    fpr = np.cumsum(normal[order], dtype=np.int64)[ends] / n_normal
    return s[order][ends], fpr, pro


def _authors_aupro(scores: np.ndarray, fpr: np.ndarray, pro: np.ndarray, limit: float, num: int) -> float:
    """The authors' coarse AUPRO, read off the exact curve (distinct ``scores``, highest first)."""
    thresholds = np.linspace(scores[-1], scores[0], num)[::-1]  # max down to min, both included
    # For each threshold, the number of distinct scores >= t indexes the exact curve,
    # once (0, 0) (nothing predicted) is put in front.
    ascending = scores[::-1]
    index = ascending.size - np.searchsorted(ascending, thresholds, side="left")
    fprs, pros = np.append(0.0, fpr)[index], np.append(0.0, pro)[index]
    keep = fprs <= limit
    fprs, pros = fprs[keep], pros[keep]
    if fprs.size < 2 or fprs.max() <= 0:
        return NAN
    return float(auc(fprs / fprs.max(), pros))


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under the polyline ``(x, y)`` (x sorted) from ``x[0]`` to ``limit``."""
    k = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    area = _trapezoid(x[:k], y[:k])
    if k < x.size and x[k - 1] < limit:  # the segment crossing the limit, cut there
        y_limit = y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1])
        area += (limit - x[k - 1]) * (y[k - 1] + y_limit) / 2.0
    return float(area)


def aupro(
    masks: Any,
    maps: Any,
    fpr_limit: float = 0.3,
    method: str = "exact",
    num_thresholds: int = 200,
) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to a false positive rate.

    Regions are the connected components of each image's binarised mask
    (``scipy.ndimage.label`` with 8-connectivity, ``structure=np.ones((3, 3))``,
    as in the MVTec AD reference evaluation and skimage's default
    ``measure.label`` used by the authors' code). At threshold ``t`` a pixel is
    predicted anomalous iff ``map >= t``; ``PRO(t)`` is the mean over all
    regions of all images of the fraction of the region's pixels predicted
    anomalous, and ``FPR(t)`` is the fraction of normal pixels (mask 0, over
    all images) predicted anomalous. Images without anomaly only contribute
    normal pixels.

    ``method="exact"``: the curve has one point per distinct map value, starts
    at (0, 0), and is integrated with the trapezoidal rule from FPR 0 to
    exactly ``fpr_limit`` (linear interpolation at the crossing), then divided
    by ``fpr_limit``; a perfect detector scores 1.0.

    ``method="authors"``: the TPS authors' 200-step version. Thresholds are
    ``np.linspace(min, max, num_thresholds)`` over all maps (inclusive), each
    gives one (FPR, PRO) point (``map >= t``); points with ``FPR <= fpr_limit``
    are kept, their FPRs divided by the largest kept FPR, and the area is
    ``sklearn.metrics.auc``. This is *not* the exact value: the thresholds are
    coarse (the steep start of the curve is linearly interpolated over wide
    FPR steps), the curve does not start at (0, 0), and it is normalised by the
    largest FPR actually reached below the limit instead of by the limit. On
    concave curves it is usually slightly *lower* than the exact value (by
    0.00-0.05 on small synthetic cases). It is NaN if fewer than two points
    are kept or all kept FPRs are 0 (e.g. a perfect detector: the authors'
    code divides by zero there).

    Args:
        masks: (N, H, W) or (H, W) ground truth masks, binarised at 0.5.
        maps: anomaly maps of the same shape, higher means more anomalous.
        fpr_limit: upper FPR integration bound, in (0, 1].
        method: ``"exact"`` or ``"authors"``.
        num_thresholds: number of thresholds of the ``"authors"`` method.

    Returns:
        The normalised AUPRO, or NaN if there is no anomalous region or no normal pixel.

    >>> mask = np.zeros((1, 4, 4)); mask[0, :2, :2] = 1
    >>> aupro(mask, mask)
    1.0
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if method not in ("exact", "authors"):
        raise ValueError(f"method must be 'exact' or 'authors', got {method!r}")
    curve = _pro_curve(masks, maps)
    if curve is None:
        return NAN
    thresholds, fpr, pro = curve
    if method == "authors":
        return _authors_aupro(thresholds, fpr, pro, fpr_limit, num_thresholds)

    return _area_up_to(np.append(0.0, fpr), np.append(0.0, pro), fpr_limit) / fpr_limit


def pixel_metrics(masks: Any, maps: Any, aupro_method: str = "exact") -> dict[str, float]:
    """Pixel-level metrics as a dict: ``pixel_auroc``, ``pixel_aupro``, ``pixel_ap``, ``pixel_f1_max``.

    Args:
        masks: (N, H, W) ground truth masks.
        maps: (N, H, W) anomaly maps.
        aupro_method: passed to :func:`aupro` as ``method``.
    """
    curve = _pixel_curve(masks, maps)  # one sort shared by AUROC, AP and F1
    return {
        "pixel_auroc": NAN if curve is None else _auroc(*curve),
        "pixel_aupro": aupro(masks, maps, method=aupro_method),
        "pixel_ap": NAN if curve is None else _ap(*curve),
        "pixel_f1_max": NAN if curve is None else _f1_max(*curve),
    }
