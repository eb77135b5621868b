"""Tables 1-3 and Figure 3 of the paper, our columns beside the published ones, from a comparison summary.

The summary is :func:`tpslab.runs.score.summarise`'s tidy table (one row per entry, data set, run,
protocol and metric). Here it becomes:

* a *long* table per paper table (CSV): every cell of ours with its mean, std over replicates,
  bootstrap interval, the published number, its provenance, the difference and whether our
  interval excludes the published number;
* the paper's *layout* (Markdown, LaTeX): data sets as rows, per method our "a, b" pair beside the
  published one. ``*`` marks a number whose interval excludes the published one, a dagger a
  published cell that traces to no source (:func:`tpslab.reports.paper_numbers.provenance`);
* a figure per table: data sets x methods with interval bars, published numbers as black ticks.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tpslab.reports import paper_numbers as pn
from tpslab.viz import _title

TABLE_METRICS = pn.TABLE_METRICS  # which two metrics each table's pairs are
DAGGER = pn.DAGGER
PAPER_NAMES = pn.PAPER_NAMES  # tpslab's method name -> the paper's


def _published(table: int, dataset: str, entry: str, metric: str) -> tuple[float, str]:
    """The published number of a cell (NaN if the paper has none) and its source key."""
    published = pn.TABLE1 if table == 1 else pn.TABLE2
    name = PAPER_NAMES.get(entry)
    if dataset not in published or name not in published[dataset]:
        return math.nan, ""
    value = published[dataset][name][TABLE_METRICS[table].index(metric)]
    return value, pn.provenance(table, dataset, name)[0]


def long_table(summary: pd.DataFrame, table: int, protocol: str, runs: dict[str, str]) -> pd.DataFrame:
    """Table 1 or 2 as one row per (data set, method, metric), ours beside the published number.

    Args:
        summary: :func:`tpslab.runs.score.summarise` output.
        table: 1 (classification) or 2 (segmentation).
        protocol: ``reference`` or ``harmonised``.
        runs: data set -> the run whose trained models fill the table (``industrial_runs``).
    """
    part = summary[(summary["protocol"] == protocol) & ~summary["ablation"] & summary["metric"].isin(
        TABLE_METRICS[table])]
    part = part[[runs.get(d) == r or r == "" for d, r in zip(part["dataset"], part["run"], strict=True)]]
    rows = []
    for r in part.itertuples(index=False):
        published, source = _published(table, r.dataset, r.entry, r.metric)
        outside = bool(not math.isnan(published) and not math.isnan(r.ci_low)
                       and not r.ci_low <= published <= r.ci_high)
        rows.append({"dataset": r.dataset, "method": r.entry, "metric": r.metric, "ours": r.mean, "std": r.std,
                     "seeds": r.seeds, "ci_low": r.ci_low, "ci_high": r.ci_high, "published": published,
                     "source": source, "difference": r.mean - published, "outside_interval": outside,
                     "classes": r.classes})
    return pd.DataFrame(rows)


def paper_order(methods: list[str]) -> list[str]:
    """Methods in the paper's column order (CLIP, WinCLIP, AnomalyCLIP, MuSc, TPS), any others after."""
    order = {m: i for i, m in enumerate(("clip", "winclip", "anomalyclip", "musc", "tps"))}
    return sorted(methods, key=lambda m: order.get(m, len(order)))


def _cell(long: pd.DataFrame, dataset: str, method: str, metrics: tuple[str, str]) -> str:
    parts = []
    for m in metrics:
        row = long[(long["dataset"] == dataset) & (long["method"] == method) & (long["metric"] == m)]
        if not len(row):
            return "not run"
        r = row.iloc[0]
        text = f"{r.ours:.1f}" + (f"\u00b1{r['std']:.1f}" if r.seeds > 1 else "")
        parts.append(text + ("*" if r.outside_interval else ""))
    return ", ".join(parts)


def layout(long: pd.DataFrame, table: int, methods: list[str], column: str) -> pd.DataFrame:
    """The paper's layout of Table 1 or 2: per method, the published pair and ours (``column`` names ours)."""
    published = pn.TABLE1 if table == 1 else pn.TABLE2
    metrics = TABLE_METRICS[table]
    ours_sets = list(dict.fromkeys(long["dataset"]))
    rows = []
    for d in [*published, *(d for d in ours_sets if d not in published)]:
        known = d in published
        classes = long.loc[long["dataset"] == d, "classes"]
        row = {"Datasets": pn.DATASET_NAMES.get(d, d), "Category": pn.CATEGORY[d][0] if known else "synthetic",
               "|C|": pn.CATEGORY[d][1] if known else int(classes.iloc[0]) if len(classes) else "-"}
        for m in paper_order(methods):
            name = PAPER_NAMES.get(m, m)
            if known and name in published[d]:
                row[f"{name} (paper)"] = pn.published_cell(published[d][name], table, d, name)
            else:
                row[f"{name} (paper)"] = "-"
            row[f"{name} ({column})"] = _cell(long, d, m, metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def rows_run(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a layout in which at least one of our cells was run (what a notebook prints)."""
    ours = [c for c in table.columns if "(tpslab" in c or c.startswith("tpslab")]
    return table[(table[ours] != "not run").any(axis=1)] if ours else table


def table3(summary: pd.DataFrame, protocol: str, runs: dict[str, str], column: str) -> pd.DataFrame:
    """Table 3: TPS trained on industrial vs medical data, published beside ours (``medical-<task>`` runs)."""
    part = summary[(summary["protocol"] == protocol) & (summary["entry"] == "tps")]

    def ours(dataset: str, run: str | None, metrics: tuple[str, str]) -> str:
        got = [part[(part["dataset"] == dataset) & (part["run"] == run) & (part["metric"] == m)] for m in metrics]
        if not all(len(g) for g in got):
            return "not run"
        return ", ".join(f"{g.iloc[0]['mean']:.1f}" + (f"\u00b1{g.iloc[0]['std']:.1f}" if g.iloc[0]["seeds"] > 1
                                                       else "") for g in got)
    return pd.DataFrame([{"Task": task.capitalize(), "Dataset": pn.DATASET_NAMES[d],
                          **{f"{k} (paper)": f"{a:.1f}, {b:.1f}" for k, (a, b) in v.items()},
                          f"{column}, industrial": ours(d, runs.get(d), TABLE_METRICS[task]),
                          f"{column}, medical": ours(d, f"medical-{task}", TABLE_METRICS[task])}
                         for task, sets in pn.TABLE3.items() for d, v in sets.items()])


def ablation_table(summary: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Figure 3's data: each ablation row on each data set, every metric with its std and interval."""
    part = summary[(summary["protocol"] == protocol) & summary["ablation"]]
    return part[["entry", "dataset", "metric", "mean", "std", "seeds", "ci_low", "ci_high"]].rename(
        columns={"entry": "row"}).reset_index(drop=True)


def plot_intervals(long: pd.DataFrame, metrics: tuple[str, ...], title: str, label: str | None = None,
                   hue: str = "method", x: str = "dataset", value: str = "ours") -> plt.Figure:
    """One panel per metric: bars of ``value`` by ``x`` and ``hue``, with bootstrap intervals; published as ticks.

    Drawn in seaborn's whitegrid style and palette (the same look from the CLI and the notebooks).
    """
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        return _plot_intervals(long, metrics, title, label, hue, x, value, sns.color_palette())


def _plot_intervals(long: pd.DataFrame, metrics: tuple[str, ...], title: str, label: str | None, hue: str, x: str,
                    value: str, colours: list) -> plt.Figure:
    hues = paper_order(list(dict.fromkeys(long[hue]))) if hue == "method" else list(dict.fromkeys(long[hue]))
    xs = list(dict.fromkeys(long[x]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.4, 0.9 * len(xs) * max(1, len(hues)) / 2.5)
                                                        * len(metrics), 3.4), squeeze=False)
    width = 0.8 / max(1, len(hues))
    for ax, metric in zip(axes[0], metrics, strict=True):
        part = long[long["metric"] == metric]
        for j, h in enumerate(hues):
            sub = part[part[hue] == h].set_index(x).reindex(xs)
            pos = np.arange(len(xs)) - 0.4 + width * (j + 0.5)
            err = np.array([sub[value] - sub["ci_low"], sub["ci_high"] - sub[value]])
            name = PAPER_NAMES.get(h, str(h)) if hue == "method" else str(h)
            ax.bar(pos, sub[value], width, color=colours[j % len(colours)], label=name)
            ax.errorbar(pos, sub[value], yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="black",
                        elinewidth=0.8, capsize=2)
            if "published" in sub and sub["published"].notna().any():
                ax.scatter(pos, sub["published"], marker="_", s=120, color="black", zorder=3,
                           label="published" if j == 0 else None)
        ax.set_xticks(np.arange(len(xs)), xs, rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.grid(axis="x", visible=False)  # groups of bars, not a continuous axis
        if "auroc" in metric:  # 50 is chance for an AUROC only (not for AP or AUPRO)
            ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("percent")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _title(fig, title, label)
    fig.tight_layout()
    return fig
