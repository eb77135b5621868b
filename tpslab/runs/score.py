"""Scoring stored predictions under a protocol, with paired bootstrap samples.

Two protocols (docs/baselines.md#decision-8-5), both :class:`tpslab.methods.base.EvalProtocol`:

* ``reference``: each method as its reference code evaluates it: its own input size and map
  smoothing, its own mask rule, the profile's ``evaluate.aupro_method`` (the paper's layout);
* ``harmonised``: every map resized (bilinear) to ``compare.harmonised_size`` (518 on ``paper``),
  smoothed with ``compare.harmonised_sigma`` at 518 px (scaled), masks > 0.5, exact AUPRO.

A class's point metrics are :func:`tpslab.evaluation.evaluate.score_class` (what ``tpslab
evaluate`` reports); its bootstrap samples use the resamples of :mod:`tpslab.metrics.bootstrap`,
stratified by label, whole images, the same resamples for every method and replicate (a paired
design). Scores of a run are cached beside its predictions (``scores-<protocol>.npz``), keyed
by the :func:`tpslab.store.digest` of the protocol, the bootstrap settings and the classes.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from tpslab.data.dataset import mask_to_tensor
from tpslab.data.images import load_mask
from tpslab.data.meta import load_meta
from tpslab.evaluation import predictions
from tpslab.evaluation.evaluate import score_class
from tpslab.evaluation.predictions import ClassPredictions
from tpslab.evaluation.smoothing import gaussian_blur
from tpslab.methods.base import EvalProtocol, scaled_sigma
from tpslab.metrics.bootstrap import PixelBootstrap, image_samples, interval, resample_counts
from tpslab.profiles import Profile
from tpslab.runs.plan import Context, Job, prediction_folder
from tpslab.store import digest
from tpslab.utils import TPSLabError, atomic_path

METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro")
PROTOCOLS = ("reference", "harmonised")
ClassScores = tuple[dict[str, float], dict[str, np.ndarray]]  # a class's metrics and their bootstrap samples


def protocols(profile: Profile) -> dict[str, EvalProtocol]:
    """The two protocols of a profile."""
    cmp = profile.compare
    size = cmp.harmonised_size
    return {"reference": EvalProtocol(None, None, "each method's reference code", "reference", None,
                                      profile.evaluate.aupro_method),
            "harmonised": EvalProtocol(size, scaled_sigma(cmp.harmonised_sigma, size), "docs/baselines.md#decision-8-5",
                                       "harmonised", "gt_half", "exact")}


def class_seed(boot_seed: int, dataset: str, cls: str) -> int:
    """The resampling seed of one class: the same for every method and replicate (paired resamples)."""
    return (boot_seed * 1_000_003 + zlib.crc32(f"{dataset}/{cls}".encode())) % 2**31


# ----------------------------------------------------------------------------- one stored run -> class scores


def _check_images(meta: Any, cls: str, paths: list[str]) -> list[dict[str, Any]]:
    """The class's test samples, refusing stored predictions made for other images."""
    samples = meta.samples("test", [cls])
    if [s["img_path"] for s in samples] != list(paths):
        raise TPSLabError(f"{meta.root}: the test images of class {cls!r} changed since the predictions were stored; "
                          "rerun tpslab compare (their folders are remade)")
    return samples


def _masks(meta: Any, samples: list[dict[str, Any]], size: int, rule: str) -> np.ndarray:
    """(N, size, size) bool masks of the samples, in their order (zeros where an image has none)."""
    out = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(samples):
        if s["mask_path"]:
            out[i] = mask_to_tensor(load_mask(meta.path(s["mask_path"])), size, rule).numpy() > 0.5
    return out


def _maps(raw: np.ndarray, size: int, sigma: float, chunk: int = 64) -> np.ndarray:
    """Stored float16 maps resized (bilinear) to ``size`` and smoothed, as float16 (what evaluation scores)."""
    out = np.empty((len(raw), size, size), np.float16)
    for i in range(0, len(raw), chunk):
        m = torch.from_numpy(raw[i:i + chunk].astype(np.float32))
        if m.shape[-1] != size:
            m = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        out[i:i + chunk] = (gaussian_blur(m, sigma) if sigma > 0 else m).numpy()
    return out


def bootstrap_class(run: ClassPredictions, masks: np.ndarray, maps: np.ndarray, aupro_method: str,
                    counts: np.ndarray) -> ClassScores:
    """The four metrics of a class (fractions) and their bootstrap samples (K resamples given as ``counts``).

    Pixel metrics use the images with a mask only; an AUPRO computed the authors' way has no
    bootstrap (its samples are NaN).
    """
    keep = np.asarray(run.has_mask, bool)
    predicted = ClassPredictions(run.scores, maps, run.labels, keep, run.paths, masks=masks)
    point = {k: v / 100 for k, v in score_class(predicted, aupro_method).items()}  # tpslab evaluate's own code
    boot = image_samples(run.labels, run.scores, counts)
    if keep.any():
        boot.update(PixelBootstrap(masks[keep], maps[keep]).samples(counts[:, keep]))
        if aupro_method != "exact":
            boot["pixel_aupro"] = np.full(len(counts), np.nan)
    else:
        boot.update(pixel_auroc=np.full(len(counts), np.nan), pixel_aupro=np.full(len(counts), np.nan))
    return point, boot


class MaskCache:
    """The masks of one data set's classes at the sizes and rules asked for, loaded once for every method."""

    def __init__(self) -> None:
        self.dataset: str | None = None
        self.masks: dict[tuple[str, int, str], np.ndarray] = {}

    def get(self, meta: Any, dataset: str, cls: str, size: int, rule: str, paths: list[str]) -> np.ndarray:
        """(N, size, size) bool masks; the cache holds one data set at a time (its classes, sizes, rules)."""
        if dataset != self.dataset:
            self.dataset, self.masks = dataset, {}
        samples, key = _check_images(meta, cls, paths), (cls, size, rule)
        if key not in self.masks:
            self.masks[key] = _masks(meta, samples, size, rule)
        return self.masks[key]


def score_file(folder: Path, protocol: str) -> Path:
    """Where a run's scores under ``protocol`` are cached."""
    return folder / f"scores-{protocol}.npz"


def stored_scores(folder: Path, protocol: str) -> tuple[str, dict[str, ClassScores]] | None:
    """The cached scores of a run under ``protocol``: (their key, class -> (metrics, bootstrap samples)).

    None when there are none or they cannot be read. Metrics are fractions, as :func:`bootstrap_class` gives.
    """
    try:
        with np.load(score_file(folder, protocol)) as f:
            classes = dict.fromkeys(k.split("|")[0] for k in f.files if k.count("|") == 2)
            return str(f["key"]), {c: ({m: float(f[f"{c}|point|{m}"]) for m in METRICS},
                                       {m: f[f"{c}|boot|{m}"] for m in METRICS}) for c in classes}
    except (OSError, KeyError, ValueError):
        return None


def score_run(folder: Path, meta_path: str, dataset: str, protocol: EvalProtocol, n_boot: int,
              boot_seed: int, masks: MaskCache | None = None) -> dict[str, ClassScores]:
    """Class -> (metrics, bootstrap samples) of one stored run under ``protocol``; cached beside the run."""
    done = predictions.done_classes(folder)
    own = predictions.done_info(folder)
    size = protocol.image_size or own["image_size"]
    sigma = own["sigma"] if protocol.sigma is None else protocol.sigma
    rule = protocol.mask_rule or own["mask_rule"]
    key = digest({"protocol": asdict(protocol), "size": size, "sigma": sigma, "rule": rule, "n_boot": n_boot,
                  "boot_seed": boot_seed, "classes": done})
    cache = score_file(folder, protocol.name)
    stored = stored_scores(folder, protocol.name)
    if stored is not None and stored[0] == key and set(done) <= set(stored[1]):
        return {c: stored[1][c] for c in done}  # else (none, unreadable, other key) recomputed
    meta, got, masks = load_meta(meta_path, check_files=False), {}, masks or MaskCache()
    for cls in done:
        run = predictions.load_class(folder, cls)
        counts = resample(run.labels, n_boot, class_seed(boot_seed, dataset, cls))
        got[cls] = bootstrap_class(run, masks.get(meta, dataset, cls, size, rule, run.paths),
                               _maps(run.maps, size, sigma), protocol.aupro_method, counts)
    arrays = {"key": np.asarray(key)}
    for c, (point, boot) in got.items():
        arrays.update({f"{c}|point|{m}": np.asarray(point[m]) for m in METRICS})
        arrays.update({f"{c}|boot|{m}": np.asarray(boot[m]) for m in METRICS})
    with atomic_path(cache) as tmp:
        np.savez(tmp, **arrays)
    return got


def resample(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) resample counts; with ``n_boot = 0`` one row of ones (the point estimate, no interval)."""
    return resample_counts(labels, n_boot, seed) if n_boot else np.ones((0, len(labels)), np.int32)


# ----------------------------------------------------------------------------- all runs -> one tidy summary


def class_scores(ctx: Context, profile: Profile, jobs: list[Job]) -> pd.DataFrame:
    """One row per (entry, data set, run, replicate, protocol, class, metric): value and bootstrap samples."""
    cmp, rows, masks = profile.compare, [], MaskCache()
    predict = [j for j in jobs if j.kind == "predict"]
    for job in sorted(predict, key=lambda j: j.dataset):  # by data set: its masks are loaded once
        folder = prediction_folder(Path(ctx.out), job)
        for protocol in protocols(profile).values():
            got = score_run(folder, ctx.datasets[job.dataset], job.dataset, protocol, cmp.n_boot, cmp.boot_seed,
                            masks)
            for cls, (point, boot) in got.items():
                rows += [{"entry": job.entry, "method": job.method, "dataset": job.dataset, "run": job.run,
                          "replicate": job.replicate, "ablation": job.ablation, "protocol": protocol.name,
                          "class": cls, "metric": m, "value": 100 * point[m], "boot": 100 * np.asarray(boot[m])}
                         for m in METRICS]
    return pd.DataFrame(rows)


def summarise(scores: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Data-set figures: the mean over classes, then mean +- std over replicates, with the bootstrap interval.

    Returns:
        One row per (entry, method, dataset, run, ablation, protocol, metric): ``mean``, ``std``
        (NaN with one replicate), ``seeds``, ``ci_low``, ``ci_high`` and ``classes`` (percent).
    """
    keys = ["entry", "method", "dataset", "run", "ablation", "protocol", "metric"]
    rows = []
    for key, part in scores.groupby(keys, sort=False):
        per_rep = {r: (g["value"].mean(), np.mean(np.stack(g["boot"].tolist()), axis=0))
                   for r, g in part.groupby("replicate", sort=True)}  # class means, per replicate
        values = np.array([v for v, _ in per_rep.values()])
        boot = np.mean(np.stack([b for _, b in per_rep.values()]), axis=0)  # the replicates' mean, per resample
        low, high = interval(boot, level) if boot.size else (np.nan, np.nan)
        rows.append({**dict(zip(keys, key, strict=True)), "mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if len(values) > 1 else np.nan, "seeds": len(values),
                     "ci_low": low, "ci_high": high, "classes": part["class"].nunique()})
    return pd.DataFrame(rows)


