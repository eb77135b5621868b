"""Pixel metrics benchmark: tpslab's metrics against the code they replace and the reference loop.

Measured in one run, on synthetic blob masks and smoothed noisy maps (about 3 % anomalous pixels):

* exact AUPRO (and the authors' 200-step AUPRO) against a straightforward 200-threshold loop
  over thresholds, images and regions, written here as the reference code does it
  (``cal_pro_score``), and against the previous argsort-based exact AUPRO of tpslab;
* all four pixel metrics (``pixel_metrics``) against the previous implementation (one full
  argsort for AUROC/AP/F1 and one for AUPRO) and scikit-learn's ``roc_auc_score`` alone, with
  float32 and float16 maps, and the peak memory they allocate (``tracemalloc``);
* AUPRO time against the number and the size of the maps;
* Gaussian smoothing (sigma 4): scipy per map against the torch convolution.

Each row checks that the values agree (``diff``) and gives the ratio to its baseline. Writes
``results/benchmarks/metrics.csv``.

    python benchmarks/bench_metrics.py [--quick] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc, roc_auc_score

from tpslab import metrics
from tpslab.evaluation.smoothing import gaussian_blur

# --------------------------------------------------------------------------- inputs


def make_class(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 blob masks (3 % anomalous, a third of the images normal) and float32 maps."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, size, size)).astype(np.float32), (0, size / 40, size / 40))
    masks = (noise > np.quantile(noise, 0.97)).astype(np.uint8)
    masks[::3] = 0
    maps = masks * 0.6 + rng.random(masks.shape, dtype=np.float32)
    maps = ndimage.gaussian_filter(maps, (0, size / 128, size / 128)).astype(np.float32)
    return masks, maps


# --------------------------------------------------------------------------- baselines


def reference_loop_aupro(masks: np.ndarray, maps: np.ndarray, steps: int = 200, limit: float = 0.3) -> float:
    """The straightforward loop: 200 thresholds, each over every image and region (as ``cal_pro_score``)."""
    low, high = maps.min(), maps.max()
    fprs, pros = [], []
    normal = masks == 0
    for t in np.arange(low, high, (high - low) / steps):
        predicted = maps > t
        overlaps = []
        for image, mask in zip(predicted, masks):
            for region in measure.regionprops(measure.label(mask)):
                overlaps.append(image[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        fprs.append(np.logical_and(normal, predicted).sum() / normal.sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    f = fprs[keep]
    return float(auc((f - f.min()) / (f.max() - f.min()), pros[keep]))


def _old_sorted(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tpslab before this change: a full argsort of all pixels, descending, and tie group ends."""
    order = np.argsort(scores)[::-1]
    s = scores[order]
    return order, np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)


def old_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """Tpslab's previous exact AUPRO: float64 scores, region ids for every pixel, one argsort."""
    y, s = masks > 0.5, maps.astype(np.float64)
    regions = np.zeros(y.shape, dtype=np.int64)
    count = 0
    for i in range(len(y)):
        labelled, k = ndimage.label(y[i], structure=np.ones((3, 3), dtype=int))
        regions[i] = np.where(labelled > 0, labelled + count, 0)
        count += k
    regions, s = regions.ravel(), s.ravel()
    normal = regions == 0
    sizes = np.bincount(regions, minlength=count + 1).astype(np.float64)
    sizes[0] = np.inf
    order, ends = _old_sorted(s)
    pro = np.append(0.0, np.cumsum((1.0 / (sizes[regions] * count))[order])[ends])
    fpr = np.append(0.0, np.cumsum(normal[order], dtype=np.int64)[ends] / np.count_nonzero(normal))
    k = int(np.searchsorted(fpr, limit, side="right"))
    area = float(np.sum(np.diff(fpr[:k]) * (pro[1:k] + pro[: k - 1]) / 2))
    if k < fpr.size and fpr[k - 1] < limit:
        y_limit = pro[k - 1] + (pro[k] - pro[k - 1]) * (limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        area += (limit - fpr[k - 1]) * (pro[k - 1] + y_limit) / 2
    return area / limit


def old_pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Tpslab's previous ``pixel_metrics``: one argsort for AUROC/AP/F1, another inside AUPRO."""
    y, s = masks.ravel() > 0.5, maps.ravel().astype(np.float32)
    order, ends = _old_sorted(s)
    tps = np.cumsum(y[order], dtype=np.int64)[ends]
    fps = ends + 1 - tps
    roc = float(np.sum(np.diff(np.append(0.0, fps / fps[-1])) * (np.append(0.0, tps / tps[-1])[1:]
                                                                  + np.append(0.0, tps / tps[-1])[:-1]) / 2))
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return {"pixel_auroc": roc, "pixel_aupro": old_aupro(masks, maps),
            "pixel_ap": float(np.sum(np.diff(recall, prepend=0.0) * precision)),
            "pixel_f1_max": float(np.max(2 * tps / (tps + fps + tps[-1])))}


# --------------------------------------------------------------------------- measuring


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak memory allocated (numpy and Python) while ``fn`` runs."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _diff(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        return max(abs(a[k] - b[k]) for k in a)
    return abs(a - b)


class Table:
    """Rows of one run: every row is timed against the baseline row of its group."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, group: str, n: int, size: int, method: str, seconds: float, value: Any = None,
            baseline: str | None = None, check: Any = None, **extra: Any) -> None:
        base = next((r for r in self.rows if r["group"] == group and r["method"] == baseline), None)
        self.rows.append({
            "group": group, "maps": n, "size": size, "megapixels": round(n * size * size / 1e6, 2), "method": method,
            "seconds": seconds, "speedup": base["seconds"] / seconds if base else np.nan,
            "value": value["pixel_aupro"] if isinstance(value, dict) else value,
            "max_abs_diff": _diff(value, check) if check is not None else np.nan, **extra})


def run(quick: bool, device: str) -> pd.DataFrame:
    table = Table()
    repeat = 1 if quick else 3

    # 1. AUPRO at the size: 40 maps of 256 x 256
    n, size = (8, 128) if quick else (40, 256)
    masks, maps = make_class(n, size)
    group = "aupro"
    t, ref = timed(lambda: reference_loop_aupro(masks, maps), 1)
    table.add(group, n, size, "reference 200-threshold loop", t, ref)
    t, old = timed(lambda: old_aupro(masks, maps), repeat)
    table.add(group, n, size, "tpslab before: exact, argsort", t, old, "reference 200-threshold loop")
    t, new = timed(lambda: metrics.aupro(masks, maps), repeat)
    table.add(group, n, size, "exact", t, new, "reference 200-threshold loop", check=old)
    t, authors = timed(lambda: metrics.aupro(masks, maps, method="authors"), repeat)
    table.add(group, n, size, "authors (= cal_pro_score)", t, authors, "reference 200-threshold loop", check=ref)

    # 2. All pixel metrics of a class: 60 maps of 518 x 518
    n, size = (6, 256) if quick else (60, 518)
    masks, maps = make_class(n, size, seed=1)
    group = "pixel_metrics"
    half = maps.astype(np.float16)
    t, _ = timed(lambda: roc_auc_score(masks.ravel(), maps.ravel()), 1)
    table.add(group, n, size, "sklearn roc_auc_score alone", t)
    t, old = timed(lambda: old_pixel_metrics(masks, maps), 1)
    table.add(group, n, size, "tpslab before: 2 argsorts", t, old, "sklearn roc_auc_score alone",
              peak_MB=peak_bytes(lambda: old_pixel_metrics(masks, maps)) / 2**20)
    for label, x, check in (("float32 maps", maps, old), ("float16 maps", half, old_pixel_metrics(masks, half))):
        t, new = timed(lambda x=x: metrics.pixel_metrics(masks, x), repeat)
        table.add(group, n, size, f"pixel_metrics, {label}", t, new, "tpslab before: 2 argsorts", check=check,
                  peak_MB=peak_bytes(lambda x=x: metrics.pixel_metrics(masks, x)) / 2**20)
    if device != "cpu":
        masks_d, maps_d = torch.from_numpy(masks).to(device), torch.from_numpy(maps).to(device)
        t, new = timed(lambda: metrics.pixel_metrics(masks_d, maps_d), repeat)
        table.add(group, n, size, f"pixel_metrics, float32 on {device}", t, new, "tpslab before: 2 argsorts", check=old)

    # 3. AUPRO against the number and the size of the maps
    scaling = [(4, 64), (8, 64)] if quick else [(10, 256), (20, 256), (80, 256), (20, 128), (20, 518)]
    for n, size in scaling:
        masks, maps = make_class(n, size, seed=2)
        group = f"aupro {n}x{size}"
        t, ref = timed(lambda m=masks, x=maps: reference_loop_aupro(m, x), 1)
        table.add(group, n, size, "reference 200-threshold loop", t, ref)
        t, old = timed(lambda m=masks, x=maps: old_aupro(m, x), repeat)
        table.add(group, n, size, "tpslab before: exact, argsort", t, old, "reference 200-threshold loop")
        t, new = timed(lambda m=masks, x=maps: metrics.aupro(m, x), repeat)
        table.add(group, n, size, "exact", t, new, "reference 200-threshold loop", check=old)

    # 4. Gaussian smoothing, sigma 4
    n, size = (6, 256) if quick else (60, 518)
    maps_t = torch.from_numpy(make_class(n, size, seed=3)[1])
    group = "gaussian sigma 4"
    t, ref = timed(lambda: gaussian_blur(maps_t, 4.0, backend="scipy"), repeat)
    table.add(group, n, size, "scipy gaussian_filter per map", t)
    t, out = timed(lambda: gaussian_blur(maps_t, 4.0, backend="torch"), repeat)
    table.add(group, n, size, "torch conv, cpu", t, None, "scipy gaussian_filter per map",
              max_abs_diff=float((out - ref).abs().max()))
    if device != "cpu":
        maps_d = maps_t.to(device)
        gaussian_blur(maps_d, 4.0)  # warm-up

        def on_device() -> torch.Tensor:
            out = gaussian_blur(maps_d, 4.0)
            torch.cuda.synchronize()
            return out

        t, out = timed(on_device, repeat)
        table.add(group, n, size, f"torch conv, {device}", t, None, "scipy gaussian_filter per map",
                  max_abs_diff=float((out.cpu() - ref).abs().max()))
    return pd.DataFrame(table.rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs (CI): a few seconds")
    ap.add_argument("--out", default="results/benchmarks", help="folder of metrics.csv")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    table = run(args.quick, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("metrics_quick.csv" if args.quick else "metrics.csv")
    table.to_csv(path, index=False, float_format="%.6g")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"numpy {np.__version__}, torch {torch.__version__}, device {args.device}")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.drop(columns=["megapixels"]).to_string(index=False))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
