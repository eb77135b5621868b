"""The pixels of one class, gathered batch by batch, and the exact pixel metrics read off them.

:class:`PixelPool` is what :func:`tpslab.metrics.pixel_metrics` and the other pixel metrics
run on; use it directly to stream a class whose maps do not fit in memory at once.

How the metrics avoid sorting every pixel:

* Only the *order* of scores matters, and every curve changes only at the scores of anomalous
  (positive) pixels plus the normal pixels around them. The positive pixels, usually a few
  percent, are sorted with their region weights; the normal pixels only need to be *counted*
  above or at a score, so they are value-sorted (``ndarray.sort``, no ``argsort``, no
  gather) and then only the part that can matter: scores at or above the lowest positive score
  (AUROC, AP, F1) or at or above the normal scores' top ``fpr_limit`` quantile (AUPRO, found
  with ``np.partition``; ties at that bound are all kept, so the result stays exact).
* float16 maps are not sorted at all: normal pixels go into a 65536-bin histogram of their bit
  patterns while they stream in, so memory stays constant whatever the number of images.
* On a CUDA tensor, normal pixels are selected and sorted (or histogrammed) on the device and
  only the sorted scores come back to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["PixelPool"]

NAN = float("nan")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, skimage.measure.label's default in 2-D
_CHUNK_PIXELS = 1 << 22  # pixels labelled and split at a time (about 15 images of 518 x 518)


def _is_device_tensor(x: Any) -> bool:
    """True for a torch tensor that does not live on the CPU."""
    return type(x).__module__.startswith("torch") and x.device.type != "cpu"


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are moved to the CPU, bfloat16 becomes float32."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4 and str(x.dtype) != "torch.float16":
            x = x.float()  # bfloat16 has no numpy dtype
        x = x.numpy()
    return np.asarray(x)


class _Ranks:
    """Counts of normal scores at or below a value, from ascending scores above a bound ``lo``.

    ``values`` holds every normal score ``>= lo`` in ascending order (all of them when
    ``lo == -inf``), either one entry per pixel (``cum is None``) or one per distinct score with
    ``cum[i]`` pixels among the first ``i`` entries. ``below`` normal pixels score under ``lo``.
    Counts are exact for queries ``t >= lo``.
    """

    def __init__(self, values: np.ndarray, cum: np.ndarray | None, below: int, lo: float) -> None:
        self.values, self.cum, self.below, self.lo = values, cum, below, lo
        self.n = below + (values.size if cum is None else int(cum[-1]))

    def _count(self, t: np.ndarray, side: str) -> np.ndarray:
        i = np.searchsorted(self.values, t, side=side)  # type: ignore[call-overload]
        return self.below + (i if self.cum is None else self.cum[i])

    def greater(self, t: np.ndarray) -> np.ndarray:
        """Number of normal scores ``> t``."""
        return self.n - self._count(t, "right")

    def at_least(self, t: np.ndarray) -> np.ndarray:
        """Number of normal scores ``>= t``."""
        return self.n - self._count(t, "left")


class PixelPool:
    """Anomalous and normal pixels of one class, added a batch of images at a time.

    A pixel is anomalous (positive) iff its mask value is > 0.5. Regions are the connected
    components of each image's binarised mask with 8-connectivity (``scipy.ndimage.label`` with
    a 3x3 structure, the same as ``skimage.measure.label``'s default in 2-D). Each batch is
    processed in chunks of about 4 M pixels and nothing of the full stack is upcast.

    Memory kept per image of ``P`` pixels, ``a`` of them anomalous:

    * float16 maps: ``12 a`` bytes (positive scores as float32 and region weights); normal
      pixels go into a fixed 65536-bin histogram (0.5 MB), so a 518 x 518 image with 2 %
      anomalous pixels costs about 64 kB, and ``compute`` sorts only the ``a`` positives.
    * float32 (or bfloat16) maps: ``4 (P - a) + 12 a`` bytes, about 1.1 MB at 518 x 518;
      ``compute`` joins the normal scores chunk by chunk (freeing each) and then needs at most
      about 5 bytes per normal pixel on top (a boolean selection and the sorted selection), and
      no int64 index array.
    * float64 maps: twice the float32 figures.
    * maps on a CUDA device: the same, but float32 normal scores stay in device memory until
      ``compute`` sorts them there; only positives (and float16 histograms) come to the host.

    float16 maps are exact for the float16 values given; rounding float32 maps to float16
    moved the four metrics by less than 1e-4 on 20 synthetic 518 x 518 maps.

    Transient per chunk: one boolean mask and one int32 label image per image (5 bytes/pixel),
    plus an intp copy of the chunk's bit patterns for the float16 histogram (8 bytes/pixel).

    Example:
        >>> pool = PixelPool()
        >>> pool.update(np.array([[[0, 1], [0, 1]]]), np.array([[[0.1, 0.9], [0.5, 0.5]]]))
        >>> round(pool.compute()["pixel_auroc"], 3)
        0.875
    """

    def __init__(self) -> None:
        self._normals: list[Any] = []  # chunks of normal scores (numpy arrays or device tensors)
        self._hist: np.ndarray | None = None  # float16 maps: normal pixels per bit pattern
        self._pos_values: list[np.ndarray] = []
        self._pos_weights: list[np.ndarray] = []  # 1 / size of the pixel's region
        self._half: bool | None = None  # float16 maps (histogram) or not; fixed by the first batch
        self._dtype: np.dtype | None = None  # the maps' dtype, for the authors' thresholds
        self._min: Any = None
        self._max: Any = None
        self.n_regions = 0
        self.n_normal = 0
        self.n_positive = 0

    # ------------------------------------------------------------------ gathering

    def update(self, masks: Any, maps: Any) -> None:
        """Add images: ``masks`` and ``maps`` of shape (N, H, W) or (H, W), arrays or tensors.

        Maps may be float16, bfloat16, float32 or float64 (numpy or torch, any device); all
        batches of a pool must be float16 or none. Masks may be bool, uint8 or float.

        Raises:
            ValueError: on a shape mismatch, non-finite scores, or float16 mixed with other dtypes.
        """
        device = _is_device_tensor(maps)
        masks = to_numpy(masks)
        if device and str(maps.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
            maps = maps.float()
        scores = maps if device else to_numpy(maps)
        if tuple(masks.shape) != tuple(scores.shape):
            raise ValueError(f"shape mismatch: ground truth {tuple(masks.shape)} vs scores {tuple(scores.shape)}")
        if scores.ndim < 2:
            masks, scores = masks.reshape(1, -1), scores.reshape(1, -1)
        h, w = scores.shape[-2:]
        masks, scores = masks.reshape(-1, h, w), scores.reshape(-1, h, w)
        dtype = np.dtype(str(scores.dtype).removeprefix("torch.")) if device else scores.dtype
        if not np.issubdtype(dtype, np.floating):
            dtype, scores = np.dtype(np.float64), scores.astype(np.float64)
        half = dtype == np.float16
        if self._half is None:
            self._half, self._dtype = half, dtype
            self._hist = np.zeros(1 << 16, dtype=np.int64) if half else None
        elif half != self._half:
            raise ValueError("all batches of a PixelPool must be float16 maps or none")
        self._dtype = np.result_type(self._dtype, dtype)
        step = max(1, _CHUNK_PIXELS // max(1, h * w))
        for start in range(0, len(scores), step):
            self._add(masks[start : start + step] > 0.5, scores[start : start + step], device)

    def _add(self, positive: np.ndarray, scores: Any, device: bool) -> None:
        """Label the regions of one chunk and file its pixels."""
        if scores.size == 0:
            return
        lo, hi = (scores.min(), scores.max())
        if device:
            lo, hi = self._dtype.type(lo.item()), self._dtype.type(hi.item())  # type: ignore[union-attr]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("scores contain NaN or infinite values")
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = hi if self._max is None else max(self._max, hi)

        weights = []
        for image in positive:
            labels, n = ndimage.label(image, structure=_EIGHT)
            if n:
                sizes = np.bincount(labels.ravel())
                weights.append(1.0 / sizes[labels[image]])
                self.n_regions += n
        n_pos = int(np.count_nonzero(positive))
        self.n_positive += n_pos
        self.n_normal += positive.size - n_pos
        if weights:
            self._pos_weights.append(np.concatenate(weights))

        if device:
            import torch

            mask = torch.from_numpy(positive).to(scores.device)
            pos = scores[mask].cpu().numpy()
            neg = scores[~mask]
            if self._half:
                bits = neg.view(torch.int16).to(torch.int32).bitwise_and(0xFFFF).flatten()
                self._hist += torch.bincount(bits, minlength=1 << 16).cpu().numpy()
            else:
                self._normals.append(neg)
        else:
            pos = scores[positive]
            if self._half:  # all pixels' bit patterns minus the positive ones: no copy of the normals
                self._hist += np.bincount(scores.view(np.uint16).ravel(), minlength=1 << 16)
                self._hist -= np.bincount(pos.view(np.uint16), minlength=1 << 16)
            else:
                self._normals.append(scores[~positive])
        if n_pos:
            self._pos_values.append(pos.astype(np.float32) if self._half else pos)

    # ------------------------------------------------------------------ ordering

    def _positives(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct positive scores (descending), positives ``>=`` each, PRO of ``>=`` each."""
        values = np.concatenate(self._pos_values)
        weights = np.concatenate(self._pos_weights)
        order = np.argsort(values)[::-1]
        values, weights = values[order], weights[order]
        ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
        pro = np.cumsum(weights)[ends] / self.n_regions
        return values[ends], ends + 1, pro

    def _joined_normals(self) -> np.ndarray:
        """All normal scores in one array, built chunk by chunk so that the chunks are freed as it fills.

        The pool keeps the joined array (its order is irrelevant: it may be partitioned or sorted in place).
        """
        if len(self._normals) != 1:
            dtype = np.result_type(*self._normals) if self._normals else self._dtype
            joined = np.empty(sum(c.size for c in self._normals), dtype=dtype)
            filled = 0
            while self._normals:
                chunk = self._normals.pop(0)
                joined[filled : filled + chunk.size] = chunk
                filled += chunk.size
            self._normals = [joined]
        return self._normals[0]

    def _ranks(self, floor: float, top: int | None) -> _Ranks:
        """Normal scores, sorted where they matter.

        Args:
            floor: counts must be exact for all queries ``>= floor`` (``inf``: no such need).
            top: counts must also be exact down to the ``top``-th highest normal score.
        """
        if self._half:
            codes = np.flatnonzero(self._hist)
            values = codes.astype(np.uint16).view(np.float16).astype(np.float64)
            distinct, inverse = np.unique(values, return_inverse=True)  # merges -0.0 and +0.0
            counts = np.bincount(inverse, weights=self._hist[codes]).astype(np.int64)
            return _Ranks(distinct, np.append(0, np.cumsum(counts)), 0, -np.inf)
        device = next((c.device for c in self._normals if not isinstance(c, np.ndarray)), None)
        if device is not None:
            import torch  # device chunks (host chunks join them there): one sort on the device

            chunks = [torch.as_tensor(c, device=device).flatten() for c in self._normals]
            self._normals = [torch.sort(torch.cat(chunks)).values]
            return _Ranks(self._normals[0].cpu().numpy(), None, 0, -np.inf)
        joined = self._joined_normals()
        n = joined.size
        lo = floor
        if top is not None and top < n:
            if not (np.isfinite(floor) and np.count_nonzero(joined >= floor) >= top):
                joined.partition(n - top)  # in place: our own copy
                lo = min(floor, joined[n - top])  # the top-th highest normal score
        elif top is not None:
            lo = -np.inf
        tail = joined if lo == -np.inf else joined[joined >= lo]
        tail.sort()
        return _Ranks(tail, None, n - tail.size, lo)

    # ------------------------------------------------------------------ metrics

    def compute(
        self,
        aupro_method: str = "exact",
        fpr_limit: float = 0.3,
        num_thresholds: int = 200,
        which: tuple[str, ...] = ("pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1_max"),
    ) -> dict[str, float]:
        """The pixel metrics of everything added, exactly as defined in :mod:`tpslab.metrics`.

        Args:
            aupro_method: ``"exact"`` or ``"authors"`` (see :func:`tpslab.metrics.aupro`).
            fpr_limit: the AUPRO's FPR limit.
            num_thresholds: the number of threshold steps of ``"authors"``.
            which: the metrics to compute; leaving some out saves work.

        Returns:
            A dict with the keys in ``which``; NaN where a metric is undefined.
        """
        out = dict.fromkeys(which, NAN)
        if self.n_normal == 0 or self.n_positive == 0:
            return out
        values, tp, pro = self._positives()
        ranked = "pixel_auroc" in which or "pixel_ap" in which or "pixel_f1_max" in which
        top = int(np.floor(fpr_limit * self.n_normal)) + 2 if "pixel_aupro" in which else None
        ranks = self._ranks(float(values[-1]) if ranked else np.inf, top)
        neg_ge = ranks.at_least(values)
        if ranked:
            n_pos, n_neg = self.n_positive, self.n_normal
            count = np.diff(tp, prepend=0)
            neg_eq = neg_ge - ranks.greater(values)
            wins = int(np.dot(count, 2 * (n_neg - neg_ge) + neg_eq))  # Mann-Whitney, doubled
            precision = tp / (tp + neg_ge)
            out.update(pixel_auroc=wins / (2 * n_pos * n_neg), pixel_ap=float(np.sum(count / n_pos * precision)),
                       pixel_f1_max=float(np.max(2 * tp / (tp + neg_ge + n_pos))))
        if "pixel_aupro" in which:
            if aupro_method == "authors":
                out["pixel_aupro"] = self._authors_aupro(values, pro, ranks, fpr_limit, num_thresholds)
            else:
                out["pixel_aupro"] = _exact_aupro(values, pro, ranks, neg_ge, fpr_limit)
        return {k: out[k] for k in which}

    def _authors_aupro(self, values: np.ndarray, pro: np.ndarray, ranks: _Ranks, limit: float, steps: int) -> float:
        """``cal_pro_score`` of the reference code, from the counts (see :func:`tpslab.metrics.aupro`)."""
        lo, hi = self._dtype.type(self._min), self._dtype.type(self._max)  # type: ignore[union-attr]
        if not hi > lo:
            return NAN  # constant maps: the reference's np.arange fails
        thresholds = np.arange(lo, hi, (hi - lo) / steps)  # the reference's grid, its dtype and rounding
        compared = thresholds.astype(np.result_type(np.empty(0, self._dtype), thresholds[0]))  # dtype of `map > th`
        valid = compared >= ranks.lo  # below ranks.lo the FPR is known to exceed the limit
        fpr = np.where(valid, ranks.greater(_floor_to(compared, ranks.values.dtype)) / ranks.n, np.inf)
        n_above = values.size - np.searchsorted(values[::-1], compared, side="right")  # distinct positives > th
        pros = np.append(0.0, pro)[n_above]
        keep = fpr < limit
        if np.count_nonzero(keep) < 2:
            return NAN
        fpr, pros = fpr[keep], pros[keep]
        span = fpr.max() - fpr.min()
        if span <= 0:
            return NAN  # the reference divides 0 by 0 here
        from sklearn.metrics import auc

        return float(auc((fpr - fpr.min()) / span, pros))


def _floor_to(t: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``t`` rounded down to ``dtype`` if narrower: for values ``v`` of that dtype, ``v > t`` iff ``v > result``.

    Lets float32 scores be counted against float64 thresholds without a float64 copy of the scores.
    """
    if np.dtype(dtype).itemsize >= t.dtype.itemsize:
        return t
    with np.errstate(over="ignore"):  # beyond dtype's range: +-inf, then nextafter gives its max
        down = t.astype(dtype)
    return np.where(down > t, np.nextafter(down, dtype.type(-np.inf)), down)


def _exact_aupro(values: np.ndarray, pro: np.ndarray, ranks: _Ranks, neg_ge: np.ndarray, limit: float) -> float:
    """Exact normalised AUPRO (``map >= t`` at every distinct score) up to ``limit``.

    Between two positive scores the PRO is flat, so the curve is fully described by two points
    per distinct positive score ``p``: just before it ``(#normal > p, PRO(> p))`` and at it
    ``(#normal >= p, PRO(>= p))``, from (0, 0), ending at ``ranks.lo`` (flat beyond it) and at FPR 1.
    """
    keep = values >= ranks.lo  # positives below ranks.lo lie past the limit
    n = ranks.n
    pro = pro[keep]
    before = np.append(0.0, pro)[:-1]
    x = np.stack([ranks.greater(values[keep]), neg_ge[keep]], axis=1).ravel() / n
    y = np.stack([before, pro], axis=1).ravel()
    y_end = pro[-1] if pro.size else 0.0
    x = np.concatenate([[0.0], x, [(n - ranks.below) / n, 1.0]])
    y = np.concatenate([[0.0], y, [y_end, y_end]])
    return area_up_to(x, y, limit) / limit


def trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the polyline through the points ``(x[i], y[i])`` (trapezoidal rule)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under the polyline ``(x, y)`` (x non-decreasing) from ``x[0]`` to ``limit``."""
    k = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    area = trapezoid(x[:k], y[:k])
    if k < x.size and x[k - 1] < limit:  # the segment crossing the limit, cut there
        y_limit = y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1])
        area += (limit - x[k - 1]) * (y[k - 1] + y_limit) / 2.0
    return float(area)
