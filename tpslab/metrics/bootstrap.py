"""Bootstrap intervals for the four metrics of one class, from stored per-image predictions.

The paper's metrics of a class (image AUROC and AP, pixel AUROC and AUPRO, as defined in
:mod:`tpslab.metrics`) are point estimates over a few hundred images. Their sampling spread is
estimated here by the percentile bootstrap over *images*, without re-running any model:

* **Resampling** (:func:`resample_counts`): normal and anomalous images are resampled
  separately (stratified by label), each stratum with replacement to its own size, so every
  resample has the class's numbers of normal and anomalous images. An image is resampled whole:
  drawn twice, all its pixels count twice. A resample is a row of integer counts per image, so
  ``n_boot`` resamples are a (n_boot, N) count matrix.
* **Statistics as weighted metrics**: a resample's metric is the metric of the original images
  weighted by their counts, which is the same number as the metric of the explicitly duplicated
  images (``np.repeat``). Every statistic is a linear function of the counts followed by cheap
  per-resample arithmetic, so all resamples are computed at once with matrix products: images
  (:func:`image_samples`) through one-hot matrices over their distinct scores, pixels
  (:class:`PixelBootstrap`) through per-image histograms over score bins (normal pixels,
  anomalous pixels, and the regions' pixel fractions per bin). No resampled pixel array is ever
  built; the cost is ``O(K * N * bins)`` operations and ``O(N * bins)`` memory for K resamples.
* **Intervals** (:func:`interval`): percentiles of the resampled statistics (95 %: the 2.5th
  and 97.5th).

Accuracy: the image metrics are exact (the same values as scikit-learn with ``sample_weight``,
ties included). The pixel metrics are exact whenever a class's maps take at most ``bins``
distinct values (for instance float16 maps of small classes): the bins are then the distinct
scores and the curves are the exact ones of :mod:`tpslab.metrics`. Otherwise the bins are
quantiles of the scores and each ROC / PRO curve is replaced by the polyline through its
vertices at the bin edges; see :class:`PixelBootstrap` for the resulting error bound (with all
counts 1 below about ``1 / bins`` for the pixel AUROC and ``1 / (0.3 * bins)`` for the AUPRO,
in practice far smaller) and :meth:`PixelBootstrap.error_bounds` for the bound of each
resample, to compare with the width of the interval.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from tpslab.metrics.hist import auroc_from_hist, descending_cumsum, image_metrics_from_hist
from tpslab.metrics.pixel_pool import to_numpy

__all__ = ["PixelBootstrap", "image_samples", "interval", "resample_counts"]

NAN = float("nan")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as tpslab.metrics.pixel_pool labels regions
_CHUNK_CELLS = 1 << 21  # resamples x bins computed at a time (each (k, bins) float64 array: 16 MB)


# --------------------------------------------------------------------------- resampling


def resample_counts(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Stratified bootstrap resamples of images, as counts per image.

    The normal images (label <= 0.5) and the anomalous ones (label > 0.5) are each drawn with
    replacement, as many as the stratum holds (a multinomial draw per stratum and resample,
    normal stratum first), from ``np.random.default_rng(seed)``: the same arguments always give
    the same counts.

    Args:
        labels: (N,) image labels, anomalous iff > 0.5.
        n_boot: the number of resamples.
        seed: the seed of the random generator.

    Returns:
        (n_boot, N) int32 counts; in every row the counts of each stratum sum to its size.
    """
    labels = to_numpy(labels).ravel() > 0.5
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, labels.size), dtype=np.int32)
    for stratum in (~labels, labels):
        members = np.flatnonzero(stratum)
        if members.size:
            draws = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=n_boot)
            counts[:, members] = draws
    return counts


def _as_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """``counts`` as a (K, n) float64 matrix (a single (n,) row is accepted)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim == 1:
        counts = counts[None, :]
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must have shape (K, {n}), got {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts


# --------------------------------------------------------------------------- image level


def image_samples(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Image AUROC and AP of weighted resamples.

    The weighted AUROC is ``P(s_a > s_n) + P(s_a = s_n) / 2`` over (anomalous, normal) image pairs
    weighted by the product of their counts, which is scikit-learn's ``roc_auc_score`` with
    ``sample_weight=counts``. The weighted AP is ``sum_k (R_k - R_{k-1}) P_k`` over the distinct
    scores in decreasing order (ties grouped, step-wise), with weighted precision and recall:
    scikit-learn's ``average_precision_score`` with ``sample_weight=counts``. Both equal the
    unweighted metrics of the images repeated ``counts`` times.

    Args:
        labels: (N,) image labels, anomalous iff > 0.5.
        scores: (N,) image anomaly scores, higher means more anomalous.
        counts: (K, N) non-negative counts (weights), e.g. from :func:`resample_counts`.

    Returns:
        ``{"image_auroc": (K,), "image_ap": (K,)}`` as fractions in [0, 1]; NaN where a resample
        has no weight on one of the classes (impossible with stratified counts of a class that
        has both).
    """
    labels = to_numpy(labels).ravel() > 0.5
    scores = np.asarray(to_numpy(scores), dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"shape mismatch: labels {labels.shape} vs scores {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    weights = _as_counts(counts, scores.size)
    distinct, inverse = np.unique(scores, return_inverse=True)
    onehot = np.zeros((scores.size, distinct.size))
    onehot[np.arange(scores.size), inverse.ravel()] = 1.0
    pos = weights @ (onehot * labels[:, None])  # (K, D) anomalous weight per distinct score, ascending
    neg = weights @ (onehot * ~labels[:, None])
    return image_metrics_from_hist(pos, neg)


# --------------------------------------------------------------------------- pixel level


def _distinct_values(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores of all pixels (ascending, float64) and how many pixels take each."""
    if maps.dtype == np.float16:  # bit-pattern histogram: no sort, no copy of the maps
        hist = np.bincount(maps.view(np.uint16).ravel(), minlength=1 << 16)
        codes = np.flatnonzero(hist)
        values = codes.astype(np.uint16).view(np.float16).astype(np.float64)
        distinct, inverse = np.unique(values, return_inverse=True)  # merges -0.0 and +0.0
        return distinct, np.bincount(inverse, weights=hist[codes]).astype(np.int64)
    ordered = np.sort(maps, axis=None)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts].astype(np.float64), np.diff(np.append(starts, ordered.size))


def _quantile_edges(distinct: np.ndarray, counts: np.ndarray, bins: int) -> np.ndarray:
    """Indices into ``distinct`` of at most ``bins`` bin edges: the scores of ranks ``floor(j M / bins)``.

    Heavy ties are isolated: a distinct score hit by two or more grid ranks (a tie of at least
    ``M / bins`` pixels) also gets the next distinct score as an edge, so that it forms a bin of
    its own. Every bin then either holds a single distinct score or fewer than
    ``2 ceil(M / bins)`` pixels.
    """
    total = int(counts.sum())
    ends = np.cumsum(counts)  # the pixel ranks [ends[k-1], ends[k]) take distinct[k]
    ranks = (np.arange(bins, dtype=np.int64) * total) // bins
    hit, hits = np.unique(np.searchsorted(ends, ranks, side="right"), return_counts=True)
    heavy = hit[hits >= 2] + 1
    return np.union1d(hit, heavy[heavy < distinct.size])


class PixelBootstrap:
    """Pixel AUROC and AUPRO of weighted resamples of one class's images that have masks.

    Built once per class from its masks and maps; :meth:`samples` then evaluates any number of
    count vectors (resamples) with matrix products over per-image histograms.

    Definitions (those of :mod:`tpslab.metrics`): a pixel is anomalous iff its mask is > 0.5;
    regions are the connected components of each image's binarised mask (8-connectivity,
    ``scipy.ndimage.label``); a threshold ``t`` predicts ``map >= t``. For counts ``c``:

    * pixel AUROC: the Mann-Whitney statistic over (anomalous, normal) pixel pairs, each pixel
      weighted by its image's count, ties counted as half;
    * AUPRO: ``FPR(t)`` is the weighted fraction of normal pixels ``>= t`` and ``PRO(t)`` the
      weighted mean over all regions (a region weighs its image's count) of the region's
      fraction of pixels ``>= t``. The curve starts at (0, 0) (a threshold above every score),
      has one point per bin edge (each bin's lower edge, highest first) and ends at (1, 1); it is
      integrated with the trapezoidal rule up to ``fpr_limit`` (linear interpolation there) and
      divided by ``fpr_limit``, as :func:`tpslab.metrics.aupro` (``method="exact"``) does.

    Exact bins: if the maps take at most ``bins`` distinct values, the edges are those values and
    every statistic is exact: with all counts 1 it equals :func:`tpslab.metrics.pixel_auroc` and
    :func:`tpslab.metrics.aupro` up to float rounding (~1e-12), and with integer counts it equals
    them on the images repeated ``counts`` times (``self.exact`` is True).

    Quantile bins (``self.exact`` is False): otherwise the edges are the scores at ranks
    ``floor(j M / bins)`` of the ``M`` sorted pixel scores (a tie of ``M / bins`` pixels or more
    also gets a bin of its own), at most ``bins`` edges. Each curve then becomes the polyline
    through its own vertices at the bin edges, i.e. the pixels of a bin are treated as tied (for
    the AUROC: an (anomalous, normal) pair in the same bin counts as half). Since both curves
    are monotone, each exact segment between two bin edges lies in the box spanned by its chord,
    and the area between a monotone curve and its chord over any part ``[x0, x]`` of the box is
    at most half the box. So the error of a resample is at most, with ``dF_b``, ``dT_b``, ``dP_b``
    the increments of its FPR, TPR and PRO over bin ``b``:

    * pixel AUROC: ``sum_b dF_b dT_b / 2 <= max_b dF_b / 2``;
    * AUPRO: ``sum_b dF_b dP_b / (2 fpr_limit)`` over the bins whose segment starts below the
      limit, ``<= max_b dF_b / (2 fpr_limit)``;

    where bins of a single distinct score count 0 (the exact curve is straight there too). With
    all counts 1 a bin of several scores holds fewer than ``2 ceil(M / bins)`` pixels, so
    ``dF_b < 2 ceil(M / bins) / M_normal``: for ``bins = 4096`` and a few percent of anomalous
    pixels, errors below about 2.5e-4 (AUROC) and 8.4e-4 (AUPRO at FPR 0.3). These are worst
    cases (all of a bin's mass at one end of it); on smooth maps the error shrinks about like
    ``1 / bins**2``: on 20 smoothed random 128 x 128 float32 maps it was 6e-5 / 2.7e-4 (AUROC /
    AUPRO) with 256 bins and 2.4e-7 / 4.7e-6 with 4096. :meth:`error_bounds` returns the bound of
    each resample.

    Memory: three (N, bins) float64 histograms plus the regions per image, ``O(N * bins)``;
    building sorts a copy of the scores once unless the maps are float16.

    Args:
        masks: (N, H, W) ground truth masks (> 0.5 = anomalous), bool, integer or float.
        maps: (N, H, W) anomaly maps, float16 or float32 (float64 works too).
        bins: the largest number of score bins.
        fpr_limit: the AUPRO's FPR integration bound, in (0, 1].

    Attributes:
        edges: (B,) ascending bin lower edges, B <= bins.
        exact: whether the edges are all the distinct scores (results exact).
        normal: (N, B) normal pixels per image and bin.
        anomalous: (N, B) anomalous pixels per image and bin.
        region_fractions: (N, B) per image, the sum over its regions of each region's fraction of
            pixels in each bin.
        n_regions: (N,) regions per image.
    """

    def __init__(self, masks: np.ndarray, maps: np.ndarray, bins: int = 4096, fpr_limit: float = 0.3) -> None:
        masks, maps = to_numpy(masks), to_numpy(maps)
        if masks.shape != maps.shape or maps.ndim != 3:
            raise ValueError(f"masks and maps must both have shape (N, H, W), got {masks.shape} and {maps.shape}")
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if not np.issubdtype(maps.dtype, np.floating):
            maps = maps.astype(np.float64)
        if maps.size and not np.isfinite(maps).all():
            raise ValueError("maps contain NaN or infinite values")
        self.fpr_limit = float(fpr_limit)
        n = maps.shape[0]
        if maps.size:
            distinct, value_counts = _distinct_values(maps)
        else:
            distinct, value_counts = np.zeros(1), np.ones(1, dtype=np.int64)
        self.exact = distinct.size <= bins
        chosen = np.arange(distinct.size) if self.exact else _quantile_edges(distinct, value_counts, bins)
        self.edges = distinct[chosen]
        self._several = np.diff(np.append(chosen, distinct.size)) > 1  # bins holding more than one distinct score
        b = self.edges.size
        self.normal = np.zeros((n, b))
        self.anomalous = np.zeros((n, b))
        self.region_fractions = np.zeros((n, b))
        self.n_regions = np.zeros(n)
        for i in range(n):
            positive = masks[i] > 0.5
            index = np.searchsorted(self.edges, maps[i].astype(np.float64).ravel(), side="right") - 1
            flat = positive.ravel()
            self.anomalous[i] = np.bincount(index[flat], minlength=b)
            self.normal[i] = np.bincount(index[~flat], minlength=b)
            labels, n_regions = ndimage.label(positive, structure=_EIGHT)
            if n_regions:
                sizes = np.bincount(labels.ravel())
                self.region_fractions[i] = np.bincount(index[flat], weights=1.0 / sizes[labels.ravel()[flat]],
                                                       minlength=b)
                self.n_regions[i] = n_regions

    def _chunks(self, counts: np.ndarray) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                              np.ndarray]]:
        """Per chunk of resamples, the weighted histograms and curves (bins ascending).

        Yields ``(rows, anomalous, normal, fpr, pro, defined)``: the chunk's rows, its weighted anomalous and
        normal pixels per bin, FPR and PRO at each bin's lower edge, and whether the AUPRO is defined (some
        normal pixel and some region).
        """
        weights = _as_counts(counts, self.normal.shape[0])
        step = max(1, _CHUNK_CELLS // self.edges.size)
        for start in range(0, weights.shape[0], step):
            rows = slice(start, start + step)
            c = weights[rows]
            pos, neg = c @ self.anomalous, c @ self.normal
            n_neg, n_reg = neg.sum(axis=1, keepdims=True), c @ self.n_regions
            with np.errstate(invalid="ignore", divide="ignore"):
                fpr = descending_cumsum(neg) / n_neg  # FPR at each bin's lower edge
                pro = descending_cumsum(c @ self.region_fractions) / n_reg[:, None]
            yield rows, pos, neg, fpr, pro, (n_neg[:, 0] > 0) & (n_reg > 0)

    def _curve(self, fpr: np.ndarray, pro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The PRO curves' points, highest threshold first, from (0, 0): (K, B + 1) x and y."""
        zero = np.zeros((fpr.shape[0], 1))
        return np.hstack([zero, fpr[:, ::-1]]), np.hstack([zero, pro[:, ::-1]])

    def samples(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Pixel AUROC and AUPRO of each weighted resample.

        Args:
            counts: (K, N) non-negative counts (weights) of the N images, e.g. from
                :func:`resample_counts`.

        Returns:
            ``{"pixel_auroc": (K,), "pixel_aupro": (K,)}`` as fractions in [0, 1]; NaN where a
            resample has no anomalous or no normal pixel (AUPRO: no region or no normal pixel).
        """
        weights = _as_counts(counts, self.normal.shape[0])
        auroc, aupro = np.full(weights.shape[0], NAN), np.full(weights.shape[0], NAN)
        limit = self.fpr_limit
        for rows, pos, neg, fpr, pro, defined in self._chunks(weights):
            auroc[rows] = auroc_from_hist(pos, neg)
            x, y = self._curve(fpr, pro)
            x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
            width = np.clip(np.minimum(x1, limit) - x0, 0.0, None)  # each segment's part below the limit
            with np.errstate(invalid="ignore", divide="ignore"):
                cut = np.where(x1 > x0, width / (x1 - x0), 0.0)
            y_cut = y0 + (y1 - y0) * cut  # y at the segment's end or at the limit
            area = np.sum(width * (y0 + y_cut) / 2.0, axis=1)
            aupro[rows] = np.where(defined, np.clip(area / limit, 0.0, 1.0), NAN)  # clip: float rounding only
        return {"pixel_auroc": auroc, "pixel_aupro": aupro}

    def error_bounds(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Upper bounds on ``|binned - exact|`` of each resample's statistics (0 with exact bins).

        Args:
            counts: (K, N) non-negative counts, as for :meth:`samples`.

        Returns:
            ``{"pixel_auroc": (K,), "pixel_aupro": (K,)}``, the bounds stated in the class docstring.
        """
        weights = _as_counts(counts, self.normal.shape[0])
        k = weights.shape[0]
        if self.exact:
            return {"pixel_auroc": np.zeros(k), "pixel_aupro": np.zeros(k)}
        several = self._several  # bins of a single distinct score count 0: the exact curve is straight there too
        auroc, aupro = np.full(k, NAN), np.full(k, NAN)
        limit = self.fpr_limit
        for rows, pos, neg, fpr, pro, defined in self._chunks(weights):
            with np.errstate(invalid="ignore", divide="ignore"):
                d_f, d_t = neg / neg.sum(axis=1, keepdims=True), pos / pos.sum(axis=1, keepdims=True)
            d_p = pro - np.hstack([pro[:, 1:], np.zeros((pro.shape[0], 1))])  # PRO gained over each bin
            auroc[rows] = np.sum(np.where(several, d_f * d_t, 0.0), axis=1) / 2.0
            starts_below = (fpr - d_f < limit) & several  # fpr - d_f: the FPR at the bin's upper edge
            box = np.where(starts_below, d_f * d_p, 0.0)
            aupro[rows] = np.where(defined, np.sum(box, axis=1) / (2.0 * limit), NAN)
        return {"pixel_auroc": auroc, "pixel_aupro": aupro}


# --------------------------------------------------------------------------- intervals


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of resampled statistics.

    Args:
        samples: (K,) statistics of the resamples; NaN entries are ignored.
        level: the interval's coverage, in (0, 1): 0.95 gives the 2.5th and 97.5th percentiles
            (numpy's default linear interpolation).

    Returns:
        ``(low, high)``, or ``(nan, nan)`` if every sample is NaN (or there are none).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(samples, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return NAN, NAN
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
