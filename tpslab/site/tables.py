"""Tables 1-2 in the paper's layout (data sets x methods), our value and its interval beside the published one.

Read from the long CSVs that ``tpslab compare`` writes (``compare/tables/table<N>_<protocol>_long.csv``:
one row per data set, method and metric with ``ours``, ``ci_low``, ``ci_high``, ``outside_interval``);
the published numbers and their provenance come from :mod:`tpslab.reports.paper_numbers`.
"""

from __future__ import annotations

import html
import math

from tpslab.reports import paper_numbers as pn
from tpslab.reports.paper_numbers import PAPER_NAMES
from tpslab.reports.paper_tables import paper_order
from tpslab.runs.score import PROTOCOLS

WHAT = {1: "classification: image AUROC, image AP", 2: "segmentation: pixel AUROC, pixel AUPRO"}


def _num(text: str | None) -> float:
    """A CSV cell as a float (NaN for empty or unreadable)."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def ours_text(row: dict[str, str]) -> str:
    """``mean [low, high]`` (percent, one decimal); ``*`` when the interval excludes the published number."""
    mean, low, high = _num(row.get("ours")), _num(row.get("ci_low")), _num(row.get("ci_high"))
    text = f"{mean:.1f}" + ("" if math.isnan(low) else f" [{low:.1f}, {high:.1f}]")
    return text + ("*" if str(row.get("outside_interval")).lower() == "true" else "")


def _published(table: int, dataset: str, method: str) -> tuple[str, str]:
    """The published pair as printed (with its dagger) and where it comes from; ("-", "") if none."""
    published = pn.TABLE1 if table == 1 else pn.TABLE2
    name = PAPER_NAMES.get(method, method)
    if dataset not in published or name not in published[dataset]:
        return "-", ""
    source, note = pn.provenance(table, dataset, name)
    return pn.published_cell(published[dataset][name], table, dataset, name), \
        pn.SOURCES.get(source, source) + (f"; {note}" if note else "")


def paper_table(rows: list[dict[str, str]], table: int, protocol: str) -> str:
    """One table (HTML): a row per data set (the paper's, then ours not in it), two columns per method."""
    metrics = pn.TABLE_METRICS[table]
    cell = {(r["dataset"], r["method"], r["metric"]): r for r in rows}
    published = pn.TABLE1 if table == 1 else pn.TABLE2
    ours_sets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = paper_order(list(dict.fromkeys([*PAPER_NAMES, *(r["method"] for r in rows)])))
    head1 = "<tr><th rowspan=2>Data set</th><th rowspan=2>Category</th><th rowspan=2>|C|</th>" + "".join(
        f"<th colspan=2>{html.escape(PAPER_NAMES.get(m, m))}</th>" for m in methods) + "</tr>"
    head2 = "<tr>" + "<th>paper</th><th>ours [interval]</th>" * len(methods) + "</tr>"
    body = []
    for d in [*published, *(d for d in ours_sets if d not in published)]:
        known = d in pn.CATEGORY
        classes = next((r.get("classes", "") for r in rows if r["dataset"] == d), "-")
        tds = [html.escape(pn.DATASET_NAMES.get(d, d)), html.escape(pn.CATEGORY[d][0]) if known else "synthetic",
               str(pn.CATEGORY[d][1]) if known else html.escape(str(classes).split(".")[0] or "-")]
        out = [f"<td>{t}</td>" for t in tds]
        for m in methods:
            paper, source = _published(table, d, m)
            out.append(f'<td class="paper" title="{html.escape(source)}">{html.escape(paper)}</td>')
            got = [cell.get((d, m, k)) for k in metrics]
            ours = "<br>".join(html.escape(ours_text(g)) for g in got if g) if any(got) else "not run"
            out.append(f'<td class="ours{"" if any(got) else " notrun"}">{ours}</td>')
        body.append(f'<tr data-dataset="{html.escape(d)}">' + "".join(out) + "</tr>")
    return f'<table class="paper-table" id="table{table}-{protocol}">{head1}{head2}{"".join(body)}</table>'


def overview_tables(long_csv: dict[str, list[dict[str, str]]]) -> str:
    """Tables 1 and 2 under both protocols (what of them is on disk), with a note on how to read them.

    The page puts the label "not paper numbers" (:data:`tpslab.site.pages.LABEL`) above them.
    """
    parts = []
    for table in (1, 2):
        for protocol in PROTOCOLS:
            rows = long_csv.get(f"table{table}_{protocol}_long")
            title = f"Table {table} ({WHAT[table]}), {protocol} protocol"
            if rows is None:
                parts.append(f"<h2>{title}</h2><p class='missing'>not written yet (no table{table}_{protocol}_long.csv)"
                             "</p>")
                continue
            parts.append(f"<h2>{title}</h2>" + paper_table(rows, table, protocol))
    note = (f"<p>Each cell: the first metric above the second (percent). Ours: the mean over classes (and "
            f"replicates) with its bootstrap interval (the profile's compare.level, 95% by default); * = the "
            f"interval excludes the published number. Paper: as "
            f"printed in {html.escape(pn.SOURCE)}; {pn.DAGGER} = a published cell that traces to no source (hover a "
            "cell for where it comes from).</p>")
    return note + "".join(parts)
