"""Ranking metrics from weighted counts per score bin, for many rows (resamples) at once.

A row holds, for each score bin in ascending order, the weight (count) of anomalous and of normal
samples in it; samples in one bin are tied. :func:`tpslab.metrics.image_auroc` uses a single row
of counts per distinct score, :mod:`tpslab.metrics.bootstrap` one row per resample.
"""

from __future__ import annotations

import numpy as np

NAN = float("nan")


def auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row from weighted counts per ascending score bin, ties (same bin) as half.

    Args:
        pos: (K, B) weighted anomalous counts per bin.
        neg: (K, B) weighted normal counts per bin.

    Returns:
        (K,) AUROC, NaN where a row has no positive or no negative weight.
    """
    below = np.cumsum(neg, axis=1) - neg  # normal weight in lower bins
    wins = np.sum(pos * (below + 0.5 * neg), axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / total, NAN)


def descending_cumsum(x: np.ndarray) -> np.ndarray:
    """Per row, the sum of each bin and all higher bins (bins ascending)."""
    return np.cumsum(x[:, ::-1], axis=1)[:, ::-1]


def image_metrics_from_hist(pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """Image AUROC and AP per row from the anomalous and normal weight at each distinct score.

    Args:
        pos: (K, D) weight (count) of anomalous images at each of the D distinct scores, in
            ascending order of the scores.
        neg: (K, D) weight of normal images at each of the same scores.

    Returns:
        ``{"image_auroc": (K,), "image_ap": (K,)}`` as fractions in [0, 1] (scikit-learn's ``roc_auc_score`` and
        ``average_precision_score`` with the counts as ``sample_weight``, ties included); NaN where a row
        has no anomalous or no normal weight.
    """
    auroc = auroc_from_hist(pos, neg)
    tp, fp = descending_cumsum(pos), descending_cumsum(neg)  # weight with score >= each distinct score
    n_pos = tp[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp > 0, tp / (tp + fp), 0.0)  # bins with tp == 0 have no recall step anyway
        ap = np.where((n_pos > 0) & (fp[:, 0] > 0), np.sum(pos * precision, axis=1) / n_pos, NAN)
    return {"image_auroc": auroc, "image_ap": ap}
