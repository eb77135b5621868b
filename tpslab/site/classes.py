"""Per-class metrics of every method on a data set, with bootstrap intervals, for the data-set pages.

A class's numbers come from the scores ``tpslab compare`` caches beside each stored run
(``predictions/<entry>/<dataset>/<tag>/scores-<protocol>.npz``: each class's four metrics as
fractions and their bootstrap samples); the data set's own row (the mean over classes) from the
long CSVs of Tables 1-2. Nothing is recomputed from the maps.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from tpslab.metrics.bootstrap import interval
from tpslab.runs.compare import METRIC_NAMES
from tpslab.runs.score import METRICS, PROTOCOLS, stored_scores
from tpslab.site.collect import PredRun
from tpslab.site.tables import ours_text

LEVEL = 0.95  # the intervals of a class (the cache does not record the profile's level)
Cell = tuple[float, float, float]  # value, low, high (percent; NaN where there is none)


def class_metrics(folder: Path, protocol: str, level: float = LEVEL) -> dict[str, dict[str, Cell]]:
    """Class -> metric -> (value, low, high) in percent from a run's cached scores; {} if none."""
    stored = stored_scores(folder, protocol)
    out: dict[str, dict[str, Cell]] = {}
    for cls, (point, boot) in ({} if stored is None else stored[1]).items():
        for metric in METRICS:
            samples = 100 * np.asarray(boot[metric])
            low, high = interval(samples, level) if samples.size else (math.nan, math.nan)
            out.setdefault(cls, {})[metric] = (100 * point[metric], low, high)
    return out


def _fmt(cell: Cell | None) -> str:
    if cell is None or math.isnan(cell[0]):
        return "-"
    value, low, high = cell
    return f"{value:.1f}" + ("" if math.isnan(low) else f" [{low:.1f}, {high:.1f}]")


def dataset_rows(long_csv: dict[str, list[dict[str, str]]], dataset: str, protocol: str) -> dict[str, dict[str, str]]:
    """Entry -> metric -> ``mean [low, high]`` of the data set (Tables 1-2's long CSVs)."""
    out: dict[str, dict[str, str]] = {}
    for table in (1, 2):
        for r in long_csv.get(f"table{table}_{protocol}_long", []):
            if r.get("dataset") == dataset:
                out.setdefault(r["method"], {})[r["metric"]] = ours_text(r).rstrip("*")
    return out


def metrics_section(runs: list[PredRun], long_csv: dict[str, list[dict[str, str]]], dataset: str) -> str:
    """Per protocol, a table of every class x method (and the data set's mean row): four metrics with intervals."""
    parts = []
    for protocol in PROTOCOLS:
        got = {f"{r.entry}/{r.tag}": class_metrics(r.folder, protocol) for r in runs if r.dataset == dataset}
        means = dataset_rows(long_csv, dataset, protocol)
        if not any(got.values()) and not means:
            parts.append(f"<h3>{protocol} protocol</h3><p class='missing'>no scores yet (run tpslab compare)</p>")
            continue
        head = "<tr><th>class</th><th>method</th>" + "".join(f"<th>{METRIC_NAMES[m]}</th>" for m in METRICS) + "</tr>"
        rows = []
        for cls in sorted({c for g in got.values() for c in g}):
            for method, per_class in got.items():
                if cls in per_class:
                    rows.append(f'<tr data-cls="{html.escape(cls)}"><td>{html.escape(cls)}</td><td>'
                                f"{html.escape(method)}</td>"
                                + "".join(f"<td>{_fmt(per_class[cls].get(m))}</td>" for m in METRICS) + "</tr>")
        for entry, values in means.items():
            rows.append(f'<tr class="mean"><td><b>mean over classes</b></td><td>{html.escape(entry)}</td>'
                        + "".join(f"<td>{html.escape(values.get(m, '-'))}</td>" for m in METRICS) + "</tr>")
        parts.append(f"<h3>{protocol} protocol</h3><table class='class-metrics' id='classes-{protocol}'>{head}"
                     + "".join(rows) + "</table>")
    note = (f"<p>Percent. A class: its metric on the stored maps with a {round(100 * LEVEL)}% bootstrap interval "
            "(images resampled within the class); mean over classes: as in Tables 1-2 (the profile's level).</p>")
    return "<h2>Metrics per class</h2>" + note + "".join(parts)
