"""``tpslab compare``: every column of Tables 1-3 and Figure 3, from stored predictions, with intervals.

The grid (:mod:`tpslab.runs.grid`) stores each run's predictions once (:mod:`tpslab.evaluation.predictions`);
everything here is computed from those files, under two evaluation protocols (docs/baselines.md#decision-8-5):

* ``reference``: each method as its reference code evaluates it: its own input size and map
  smoothing, its own mask rule, the profile's ``evaluate.aupro_method`` (the paper's layout);
* ``harmonised``: every map resized (bilinear) to ``compare.harmonised_size`` (518 on ``paper``),
  smoothed with ``compare.harmonised_sigma`` at 518 px (scaled), masks > 0.5, exact AUPRO.

A data set's figure is the mean over its classes. Each gets a bootstrap interval (the
resamples of :mod:`tpslab.metrics.bootstrap`, stratified by label, whole images, the same resamples for
every method and replicate: a paired design) and, for trained methods, the mean and standard
deviation over the ``compare.seeds`` replicates; the interval is that of the replicates' mean.
Scores of a run are computed by its predict job and cached beside its predictions
(``scores-<protocol>.npz``, so executors spread the scoring too), keyed by the
protocol and the bootstrap settings.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpslab.evaluation import predictions
from tpslab.profiles import Profile
from tpslab.runs.grid import Context, Job, prediction_folder
from tpslab.utils import TPSLabError, atomic_path

METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro")
PROTOCOLS = ("reference", "harmonised")
ClassScores = tuple[dict[str, float], dict[str, np.ndarray]]  # a class's metrics and their bootstrap samples
PAPER_NAMES = {"tps": "TPS", "clip": "CLIP", "winclip": "WinCLIP", "anomalyclip": "AnomalyCLIP", "musc": "MuSc"}


@dataclass(frozen=True)
class Protocol:
    """How stored maps are turned into metrics."""

    name: str  # "reference" or "harmonised"
    image_size: int | None  # None: the method's own input size (maps as stored)
    sigma: float | None  # px at image_size; None: the method's reference sigma
    mask_rule: str | None  # None: the method's own ("gt_half" or MuSc's "eq_one" option)
    aupro_method: str  # "exact" or "authors"


def protocols(profile: Profile) -> dict[str, Protocol]:
    """The two protocols of a profile."""
    cmp = profile.compare
    size = cmp.harmonised_size
    return {"reference": Protocol("reference", None, None, None, profile.evaluate.aupro_method),
            "harmonised": Protocol("harmonised", size, cmp.harmonised_sigma * size / 518, "gt_half", "exact")}


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
    from tpslab.data.dataset import mask_to_tensor
    from tpslab.data.images import load_mask

    out = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(samples):
        if s["mask_path"]:
            out[i] = mask_to_tensor(load_mask(meta.path(s["mask_path"])), size, rule).numpy() > 0.5
    return out


def _maps(raw: np.ndarray, size: int, sigma: float, chunk: int = 64) -> np.ndarray:
    """Stored float16 maps resized (bilinear) to ``size`` and smoothed, as float16 (what evaluation scores)."""
    import torch
    import torch.nn.functional as F

    from tpslab.evaluation.smoothing import gaussian_blur

    out = np.empty((len(raw), size, size), np.float16)
    for i in range(0, len(raw), chunk):
        m = torch.from_numpy(raw[i:i + chunk].astype(np.float32))
        if m.shape[-1] != size:
            m = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        out[i:i + chunk] = (gaussian_blur(m, sigma) if sigma > 0 else m).numpy()
    return out


def score_class(run: predictions.ClassRun, masks: np.ndarray, maps: np.ndarray, aupro_method: str,
                counts: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The four metrics of a class (fractions) and their bootstrap samples (K resamples given as ``counts``).

    Pixel metrics use the images with a mask only; an AUPRO computed the authors' way has no
    bootstrap (its samples are NaN).
    """
    from tpslab.evaluation.evaluate import ClassPredictions
    from tpslab.evaluation.evaluate import score_class as exact_metrics
    from tpslab.metrics.bootstrap import PixelBootstrap, image_samples

    keep = np.asarray(run.has_mask, bool)
    predicted = ClassPredictions(run.scores, maps, run.labels, masks, keep, run.paths)
    point = {k: v / 100 for k, v in exact_metrics(predicted, aupro_method).items()}  # tpslab evaluate's own code
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


def score_run(folder: Path, meta_path: str, dataset: str, protocol: Protocol, n_boot: int,
              boot_seed: int, masks: MaskCache | None = None) -> dict[str, ClassScores]:
    """Class -> (metrics, bootstrap samples) of one stored run under ``protocol``; cached beside the run."""
    from tpslab.data.meta import load_meta

    done = predictions.done_classes(folder)
    own = predictions.done_info(folder)
    size = protocol.image_size or own["image_size"]
    sigma = own["sigma"] if protocol.sigma is None else protocol.sigma
    rule = protocol.mask_rule or own["mask_rule"]
    key = json.dumps({"protocol": asdict(protocol), "size": size, "sigma": sigma, "rule": rule, "n_boot": n_boot,
                      "boot_seed": boot_seed, "classes": done}, sort_keys=True)
    cache = folder / f"scores-{protocol.name}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as f:
                if str(f["key"]) == key:
                    return {c: ({m: float(f[f"{c}|point|{m}"]) for m in METRICS},
                                {m: f[f"{c}|boot|{m}"] for m in METRICS}) for c in done}
        except (OSError, KeyError, ValueError):
            pass  # an unreadable cache is recomputed
    meta, got, masks = load_meta(meta_path, check_files=False), {}, masks or MaskCache()
    for cls in done:
        run = predictions.load_class(folder, cls)
        counts = resample(run.labels, n_boot, class_seed(boot_seed, dataset, cls))
        got[cls] = score_class(run, masks.get(meta, dataset, cls, size, rule, run.paths),
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
    from tpslab.metrics.bootstrap import resample_counts

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
    from tpslab.metrics.bootstrap import interval

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


# ----------------------------------------------------------------------------- the whole command


@dataclass
class Comparison:
    """What :func:`run_compare` produced."""

    summary: pd.DataFrame  # summarise(): one row per entry, data set, run, protocol, metric
    tables: dict[str, pd.DataFrame]  # name -> table, as written under <out>/compare/tables/
    figures: dict[str, Any]  # name -> matplotlib figure, as written under <out>/compare/figures/
    out: Path  # <out>/compare


def context(profile: str, overrides: tuple[str, ...] = (), out: str | Path | None = None,
            data: str | Path | None = None, progress: bool = False, locate: bool = True) -> tuple[Context, Profile]:
    """The grid's context for a profile: folders, and its data sets (made or found when ``locate``)."""
    from tpslab.profiles import data_root, load_profile, locate_datasets, needed_datasets, results_root
    from tpslab.utils import project_path

    prof = load_profile(profile, list(overrides))
    out_dir = project_path(out or results_root() / prof.name)
    data_dir = project_path(data_root(data))
    if locate:
        found = {k: str(v) for k, v in locate_datasets(prof, data_dir, progress).items()}
    else:  # where each data set's meta.json is (or would be), without making or checking anything
        root = data_dir / prof.data.root if prof.data.kind == "synthetic" else data_dir
        found = {n: str(root / prof.data.folder(n) / "meta.json") for n in needed_datasets(prof)}
    return Context(str(profile), tuple(overrides), str(out_dir), str(data_dir), found, progress), prof


def run_compare(profile: str = "smoke", overrides: tuple[str, ...] = (), out: str | Path | None = None,
                data: str | Path | None = None, executor: Any = None, progress: bool = True,
                say: Any = print) -> Comparison:
    """Run the profile's grid (what is not finished yet), then write Tables 1-3 and Figure 3 with intervals.

    Args:
        profile: a built-in profile or a YAML file.
        overrides: ``section.key=value`` settings.
        out: the results folder (default: ``results/<profile>``).
        data: the data root (default: ``$TPSLAB_DATA`` or ``./data``).
        executor: :class:`tpslab.runs.grid.ExecutorOptions` (default: in this process).
        progress: progress bars (in this process).
        say: where progress lines go.
    """
    from tpslab.runs.grid import plan, run_grid, write_datasets
    from tpslab.runs.reproduce import preflight

    where, prof = context(profile, overrides, out, data, locate=False)
    prof.apply_threads()
    preflight(prof, Path(where.data))  # weights, data sets, GPU: one clear error before anything runs
    ctx, prof = context(profile, overrides, out, data, progress)
    write_datasets(ctx)
    jobs = plan(prof)
    run_grid(ctx, jobs, executor, say)
    return write_comparison(ctx, prof, jobs)


METRIC_NAMES = {"image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
                "pixel_aupro": "pixel AUPRO"}


def write_comparison(ctx: Context, profile: Profile, jobs: list[Job]) -> Comparison:
    """Score every stored run, then write the tables (CSV, Markdown, LaTeX) and figures under ``<out>/compare``."""
    from tpslab.evaluation.evaluate import write_table
    from tpslab.profiles import industrial_runs
    from tpslab.reports import paper_tables as ct
    from tpslab.viz import save_figure

    out = Path(ctx.out) / "compare"
    summary = summarise(class_scores(ctx, profile, jobs), profile.compare.level)
    runs, label = industrial_runs(profile), profile.label
    column = f"tpslab {profile.name}"
    methods = profile.compared_methods
    tables: dict[str, pd.DataFrame] = {"summary": summary}
    figures: dict[str, Any] = {}
    pct = f"{round(100 * profile.compare.level)}%"
    for protocol in PROTOCOLS:
        for number, what in ((1, "classification (image AUROC, AP)"), (2, "segmentation (pixel AUROC, AUPRO)")):
            long = ct.long_table(summary, number, protocol, runs)
            tables[f"table{number}_{protocol}"] = ct.layout(long, number, methods, column)
            tables[f"table{number}_{protocol}_long"] = long
            figures[f"table{number}_{protocol}"] = ct.plot_intervals(
                long, ct.TABLE_METRICS[number], f"Table {number}, {protocol} protocol: {what}, {pct} intervals", label)
        tables[f"table3_{protocol}"] = ct.table3(summary, protocol, runs, column)
        if summary["ablation"].any():
            abl = ct.ablation_table(summary, protocol)
            tables[f"figure3_{protocol}"] = abl
            figures[f"figure3_{protocol}"] = ct.plot_intervals(
                abl, METRICS, f"Figure 3, {protocol} protocol: ablation rows, {pct} intervals", label, hue="row",
                value="mean")
    notes = {"summary": "every data-set figure (percent): mean over classes, mean and std over replicates, "
                        f"{pct} bootstrap interval"}
    for number in (1, 2):  # the layouts print two numbers per cell, as the paper does: say which
        pair = " and ".join(METRIC_NAMES.get(m, m) for m in ct.TABLE_METRICS[number])
        for protocol in PROTOCOLS:
            notes[f"table{number}_{protocol}"] = (f"table{number}, {protocol} (percent): each cell 'a, b' is {pair}; "
                                                  f"* = our {pct} interval excludes the published number; "
                                                  f"{ct.DAGGER} = published cell without a source")
    for name, table in tables.items():
        note = notes.get(name, f"{name.replace('_', ', ')} (percent); * = our {pct} interval excludes the published "
                               f"number; {ct.DAGGER} = published cell without a source")
        write_table(table, out / "tables" / name, f"{note} ({label})", latex=not name.endswith("_long"))
    for name, fig in figures.items():
        save_figure(fig, out / "figures" / name)
    return Comparison(summary, tables, figures, out)


# ----------------------------------------------------------------------------- --dry-run


def _gpu_rates(out: Path) -> tuple[dict[str, float], str | None]:
    """Images/s per ``backbone@size`` measured on CUDA by ``benchmarks/bench_evaluate.py`` (and where), if any."""
    from tpslab.profiles import results_root

    for csv in [results_root() / "benchmarks" / "evaluate.csv", results_root() / "gpu_check" / "benchmarks" /
                "evaluate.csv", out / "benchmarks" / "evaluate.csv"]:
        if csv.is_file():
            bench = pd.read_csv(csv)
            gpu = bench[bench["device"].astype(str).str.startswith("cuda")]
            if len(gpu):
                return dict(zip(gpu["case"], gpu["images_per_s"], strict=True)), str(csv)
    return {}, None


def dry_run(ctx: Context, profile: Profile) -> str:
    """What ``tpslab compare --dry-run`` prints: each job, whether it is done, its images, an estimate; what is missing.

    Runs nothing and writes nothing. Estimates need a GPU benchmark (``benchmarks/gpu_check.sh``);
    they cover the forward pass of TPS, CLIP and AnomalyCLIP on the benchmarked backbone only.
    """
    from tpslab.data.meta import load_meta
    from tpslab.methods import method_module
    from tpslab.profiles import missing_datasets
    from tpslab.runs.grid import is_finished, plan, train_folder
    from tpslab.runs.reproduce import missing_weight_lines
    from tpslab.utils import shown

    jobs, rates, source = plan(profile), *_gpu_rates(Path(ctx.out))
    lines, done_n, total_s = [], 0, 0.0
    for job in jobs:
        meta = Path(ctx.datasets.get(job.dataset, ""))
        try:
            images = len(load_meta(meta, check_files=False).samples("test")) if meta.is_file() else None
        except TPSLabError:
            images = None
        try:
            done = images is not None and is_finished(ctx, job, profile)
        except TPSLabError:  # e.g. a cuda profile looked at from a machine without a GPU
            done = False
        done_n += done
        estimate = "?"
        if job.kind == "predict" and images and job.method in ("tps", "clip", "anomalyclip"):
            s = method_module(job.method).Settings.from_dict(profile.method_settings(job.method))
            rate = rates.get(f"{s.backbone}@{s.image_size or ''}")
            if rate:
                estimate = f"{images / rate / 60:.1f} min"
                total_s += images / rate
        where = train_folder(Path(ctx.out), job) if job.kind == "train" else prediction_folder(Path(ctx.out), job)
        lines.append(f"  {job.name:<46} {'done' if done else 'to run':<7} {images or '?':>6}  {estimate:>9}  "
                     f"{shown(where)}")
    head = [f"profile {profile.name}: {len(jobs)} jobs ({sum(j.kind == 'train' for j in jobs)} train, "
            f"{sum(j.kind == 'predict' for j in jobs)} predict), {done_n} done",
            f"  {'job':<46} {'status':<7} {'images':>6}  {'GPU est.':>9}  writes"]
    missing = missing_weight_lines(profile)
    sets = missing_datasets(profile, Path(ctx.data))
    if sets:
        missing += [f"data set (not prepared under {shown(ctx.data)}/): {s}" for s in sets]
        missing.append("(data/README.md says where to download each data set and how to prepare it)")
    tail = [f"GPU estimates: from {source} (forward passes only; {total_s / 3600:.1f} h for the jobs estimated)"
            if source else "GPU estimates: none yet (no CUDA rows in a benchmarks/evaluate.csv: run "
            "benchmarks/gpu_check.sh on the GPU; on a 2-core CPU ViT-L-14-336 at 518 px took about 7 s per image)"]
    tail += [f"missing: {m}" for m in missing] or ["missing: nothing (weights and data sets found)"]
    from tpslab.runs.cache_plan import describe

    return "\n".join(head + lines + tail + describe(profile, ctx.datasets))
