"""``tpslab compare``: every column of Tables 1-3 and Figure 3, from stored predictions, with intervals.

The grid (:mod:`tpslab.runs.plan`, :mod:`tpslab.runs.execute`) stores each run's predictions once
(:mod:`tpslab.evaluation.predictions`); everything here is computed from those files, under two
evaluation protocols (:mod:`tpslab.runs.score`). A data set's figure is the mean over its classes,
with a bootstrap interval and, for trained methods, the mean and standard deviation over the
``compare.seeds`` replicates; the interval is that of the replicates' mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tpslab.data.meta import load_meta
from tpslab.methods import method_module
from tpslab.profiles import (
    Profile,
    data_root,
    industrial_runs,
    load_profile,
    locate_datasets,
    missing_datasets,
    needed_datasets,
    results_root,
)
from tpslab.reports import paper_tables as ct
from tpslab.reports.tables import write_table
from tpslab.runs.cache_plan import describe
from tpslab.runs.execute import run_grid, write_datasets
from tpslab.runs.plan import Context, Job, is_finished, plan, prediction_folder, train_folder
from tpslab.runs.reproduce import missing_weight_lines, preflight
from tpslab.runs.score import METRICS, PROTOCOLS, class_scores, summarise
from tpslab.utils import TPSLabError, project_path, shown
from tpslab.viz import save_figure


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
                data: str | Path | None = None, executor: Any = None, progress: bool = True) -> Comparison:
    """Run the profile's grid (what is not finished yet), then write Tables 1-3 and Figure 3 with intervals.

    Args:
        profile: a built-in profile or a YAML file.
        overrides: ``section.key=value`` settings.
        out: the results folder (default: ``results/<profile>``).
        data: the data root (default: ``$TPSLAB_DATA`` or ``./data``).
        executor: :class:`tpslab.runs.execute.ExecutorOptions` (default: in this process).
        progress: progress bars (in this process).
    """
    where, prof = context(profile, overrides, out, data, locate=False)
    prof.apply_threads()
    preflight(prof, Path(where.data))  # weights, data sets, GPU: one clear error before anything runs
    ctx, prof = context(profile, overrides, out, data, progress)
    write_datasets(ctx)
    jobs = plan(prof)
    run_grid(ctx, jobs, executor)
    return write_comparison(ctx, prof, jobs)


METRIC_NAMES = {"image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
                "pixel_aupro": "pixel AUPRO"}


def write_comparison(ctx: Context, profile: Profile, jobs: list[Job]) -> Comparison:
    """Score every stored run, then write the tables (CSV, Markdown, LaTeX) and figures under ``<out>/compare``."""
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
    return "\n".join(head + lines + tail + describe(profile, ctx.datasets))
