"""Evaluation metrics for zero-shot anomaly detection.

Image level: AUROC and average precision (AP) of per-image scores.
Pixel level: AUROC, AP, maximal F1 and AUPRO of anomaly maps against ground
truth masks, pooled over all pixels of all images of a class.

All functions take numpy arrays or torch tensors (any device). Ground truth is
binarised as ``value > 0.5`` (masks, as loaded by :func:`tpslab.data.images.load_mask`,
are floats in [0, 1]; bool and uint8 masks work as they are). Every metric
returns ``float("nan")`` when it is undefined (for instance a class with no
anomalous pixel) instead of raising.

The pixel metrics are exact (they agree with scikit-learn's ``roc_auc_score`` /
``average_precision_score``, ties included, and with the definitions below) but
never ``argsort`` the pixels: :class:`tpslab.metrics.pixel_pool.PixelPool` sorts the
anomalous pixels, and only counts the normal ones, sorting only the range of
scores that matters. :func:`pixel_metrics` computes all four in one pass; use a
:class:`PixelPool` directly to stream a class batch by batch (float16 maps then
take constant memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tpslab.metrics.hist import image_metrics_from_hist
from tpslab.metrics.pixel_pool import PixelPool, to_numpy

__all__ = [
    "PixelPool",
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
AUPRO_METHODS = ("exact", "authors")


def _prepare(truth: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binarise ``truth`` at 0.5, flatten both arrays and check they match."""
    truth, scores = to_numpy(truth), to_numpy(scores)
    if truth.shape != scores.shape:
        raise ValueError(f"shape mismatch: ground truth {truth.shape} vs scores {scores.shape}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    scores = scores.ravel()
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return truth.ravel() > 0.5, scores


def _has_both_classes(labels: np.ndarray) -> bool:
    return 0 < np.count_nonzero(labels) < labels.size


# --------------------------------------------------------------------------- image level


def _image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """Both image-level metrics, exact: counts of anomalous and normal images at each distinct score."""
    y, s = _prepare(labels, scores)
    if not _has_both_classes(y):
        return {"image_auroc": NAN, "image_ap": NAN}
    _, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse.ravel(), weights=y.astype(np.float64))[None]  # (1, D), scores ascending
    neg = np.bincount(inverse.ravel(), weights=(~y).astype(np.float64))[None]
    return {k: float(v[0]) for k, v in image_metrics_from_hist(pos, neg).items()}


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of per-image anomaly scores (scikit-learn's ``roc_auc_score``, ties included).

    Computed as the Mann-Whitney statistic ``P(s+ > s-) + P(s+ = s-) / 2`` over (anomalous,
    normal) image pairs, from counts per distinct score (no scikit-learn import on this path).

    Args:
        labels: (N,) ground truth, 1 (or > 0.5) for anomalous images.
        scores: (N,) anomaly scores, higher means more anomalous.

    Returns:
        The AUROC in [0, 1], or NaN if only one class is present.

    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    return _image_metrics(labels, scores)["image_auroc"]


def image_ap(labels: Any, scores: Any) -> float:
    """Average precision of per-image anomaly scores (scikit-learn's ``average_precision_score``, ties included).

    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores in decreasing order (step-wise, no
    interpolation), as :func:`pixel_ap`.

    Args:
        labels: (N,) ground truth, 1 (or > 0.5) for anomalous images.
        scores: (N,) anomaly scores, higher means more anomalous.

    Returns:
        The AP in [0, 1], or NaN if only one class is present.
    """
    return _image_metrics(labels, scores)["image_ap"]


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """Image-level metrics as a dict with keys ``image_auroc`` and ``image_ap``."""
    return _image_metrics(labels, scores)


# --------------------------------------------------------------------------- pixel level


def _pool(masks: Any, maps: Any) -> PixelPool:
    pool = PixelPool()
    pool.update(masks, maps)
    return pool


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Area under the ROC curve over all pixels of all images, pooled.

    A pixel is a positive if its mask value is > 0.5. The ROC curve has one
    point per distinct score (threshold ``map >= t``) plus the origin, and is
    integrated with the trapezoidal rule: the same value as scikit-learn's
    ``roc_auc_score(masks.ravel() > 0.5, maps.ravel())``, ties included. It is
    computed as the Mann-Whitney statistic ``P(s+ > s-) + P(s+ = s-) / 2`` over
    all (anomalous, normal) pixel pairs, in integer arithmetic.

    Args:
        masks: (N, H, W) or (H, W) ground truth masks.
        maps: anomaly maps of the same shape, higher means more anomalous.

    Returns:
        The AUROC, or NaN if the masks contain only one label.

    >>> pixel_auroc([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.875
    """
    return _pool(masks, maps).compute(which=("pixel_auroc",))["pixel_auroc"]


def pixel_ap(masks: Any, maps: Any) -> float:
    """Average precision over all pixels of all images, pooled.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct thresholds ``t_k``
    in decreasing order (``R_0 = 0``), where ``P_k`` and ``R_k`` are the
    precision and recall of ``map >= t_k``. This step-wise sum (no
    interpolation) is scikit-learn's ``average_precision_score``, ties included.

    Args:
        masks: (N, H, W) or (H, W) ground truth masks.
        maps: anomaly maps of the same shape.

    Returns:
        The AP, or NaN if the masks contain only one label.

    >>> pixel_ap([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.8333333333333333
    """
    return _pool(masks, maps).compute(which=("pixel_ap",))["pixel_ap"]


def pixel_f1_max(masks: Any, maps: Any) -> float:
    """Maximal F1 score ``2 P R / (P + R)`` over all thresholds ``map >= t``, pixels pooled.

    The thresholds are the distinct map values (the points of the
    precision-recall curve); thresholds with no true positive have F1 = 0.

    Args:
        masks: (N, H, W) or (H, W) ground truth masks.
        maps: anomaly maps of the same shape.

    Returns:
        The maximal F1, or NaN if the masks contain only one label.

    >>> pixel_f1_max([[[0, 1], [0, 1]]], [[[0.1, 0.9], [0.5, 0.5]]])
    0.8
    """
    return _pool(masks, maps).compute(which=("pixel_f1_max",))["pixel_f1_max"]


def _check_aupro_args(fpr_limit: float, method: str) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if method not in AUPRO_METHODS:
        raise ValueError(f"method must be 'exact' or 'authors', got {method!r}")


def aupro(
    masks: Any,
    maps: Any,
    fpr_limit: float = 0.3,
    method: str = "exact",
    num_thresholds: int = 200,
) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to a false positive rate.

    Regions are the connected components of each image's binarised mask
    (8-connectivity: ``scipy.ndimage.label`` with ``structure=np.ones((3, 3))``,
    which is ``skimage.measure.label``'s default in 2-D, as in the MVTec AD
    evaluation and the reference code). For a set of predicted pixels, ``PRO``
    is the mean over all regions of all images of the fraction of the region's
    pixels predicted anomalous, and ``FPR`` the fraction of normal pixels (mask
    0, over all images) predicted anomalous. Images without anomaly only
    contribute normal pixels.

    ``method="exact"`` (default): a pixel is predicted anomalous iff
    ``map >= t``; the curve has one point per distinct map value, starts at
    (0, 0), and is integrated with the trapezoidal rule from FPR 0 to exactly
    ``fpr_limit`` (linear interpolation at the crossing), then divided by
    ``fpr_limit``; a perfect detector scores 1.0.

    ``method="authors"``: ``cal_pro_score`` of the TPS, AnomalyCLIP, WinCLIP
    (reproduction) and MuSc code. Thresholds are
    ``np.arange(min, max, (max - min) / num_thresholds)`` over all maps (the
    max excluded; numpy's rounding may add a 201st step just under the max), a
    pixel is predicted anomalous iff ``map > t`` (strictly), the points with
    ``FPR < fpr_limit`` (strictly) are kept, their FPRs rescaled to
    ``(f - min f) / (max f - min f)`` over the kept points, and the area is
    ``sklearn.metrics.auc``. How it differs from the exact value: the
    thresholds are 200 even steps in score, not the distinct scores, so the
    steep start of the curve is linearly interpolated over wide FPR steps; a
    pixel equal to a threshold is not predicted (``>``, not ``>=``); and the FPR
    axis is stretched to [0, 1] between the lowest and the highest kept FPR
    instead of being divided by the limit, so the part of the curve below the
    lowest FPR the grid reaches is left out and the last kept FPR (somewhere
    under the limit) counts as the limit. On smooth maps the two differ by
    about 0.001-0.01 (the tests' synthetic cases: up to 0.05). It is NaN where
    the reference code raises or divides 0 by 0: constant maps, fewer than two
    kept points, or all kept FPRs equal (e.g. a perfect detector).

    Args:
        masks: (N, H, W) or (H, W) ground truth masks, binarised at 0.5.
        maps: anomaly maps of the same shape, higher means more anomalous.
        fpr_limit: upper FPR integration bound, in (0, 1].
        method: ``"exact"`` or ``"authors"``.
        num_thresholds: the number of threshold steps of the ``"authors"`` method.

    Returns:
        The normalised AUPRO, or NaN if there is no anomalous region or no normal pixel.

    >>> mask = np.zeros((1, 4, 4)); mask[0, :2, :2] = 1
    >>> aupro(mask, mask)
    1.0
    """
    _check_aupro_args(fpr_limit, method)
    pool = _pool(masks, maps)
    return pool.compute(method, fpr_limit, num_thresholds, which=("pixel_aupro",))["pixel_aupro"]


def pixel_metrics(masks: Any, maps: Any, aupro_method: str = "exact") -> dict[str, float]:
    """Pixel-level metrics as a dict: ``pixel_auroc``, ``pixel_aupro``, ``pixel_ap``, ``pixel_f1_max``.

    One pass: the regions are labelled once and the scores ordered once for all
    four metrics (see :class:`PixelPool` for the memory it takes per image).

    Args:
        masks: (N, H, W) ground truth masks.
        maps: (N, H, W) anomaly maps (float16 maps are counted, not sorted).
        aupro_method: passed to :func:`aupro` as ``method``.
    """
    _check_aupro_args(0.3, aupro_method)
    return _pool(masks, maps).compute(aupro_method)
