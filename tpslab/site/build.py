"""Build the site: ``index.html`` (overview), one page per data set, training, and "what this is"."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

import tpslab
from tpslab.reports.paper_numbers import PAPER_NAMES
from tpslab.reports.paper_tables import paper_order
from tpslab.site import pages
from tpslab.site.classes import metrics_section
from tpslab.site.collect import collect, not_started
from tpslab.site.gallery import build_rows
from tpslab.site.tables import overview_tables
from tpslab.utils import TPSLabError


def _commit() -> str:
    """The git commit of the source tree, or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _loss_png(rows: list[dict], path: Path) -> bool:
    """A loss curve as a PNG (matplotlib, headless); False when the history has no loss column."""
    keys = [k for k in rows[0] if "loss" in k]
    if not keys:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 2.6))
    for k in keys:
        ax.plot(np.arange(1, len(rows) + 1), [float(r[k]) for r in rows], label=k)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def dataset_dir(data_root: str | Path | None, dataset: str) -> Path | None:
    """A data set's folder: ``ROOT/<name>`` (prepared data) or ``ROOT/synthetic/<name>`` (generated)."""
    if data_root is None:
        return None
    candidates = [Path(data_root) / dataset, Path(data_root) / "synthetic" / dataset]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def build(results: str | Path, out: str | Path | None = None, force: bool = False,
          data_root: str | Path | None = None, profile: str = "?", notebooks: Path | None = None) -> Path:
    """Write the site of ``results`` into ``out`` (default ``results/site``); returns ``out/index.html``.

    Raises:
        TPSLabError: the results folder does not exist, or ``out`` exists and ``force`` is not set.
    """
    results = Path(results)
    if not results.is_dir():
        raise TPSLabError(f"{results}: no results folder; run `tpslab compare` first")
    out = Path(out) if out else results / "site"
    if out.exists():
        if not force and any(out.iterdir()):
            raise TPSLabError(f"{out}: exists; pass --force to replace it")
        shutil.rmtree(out)
    (out / "img").mkdir(parents=True)
    res = collect(results)
    datasets = sorted({r.dataset for r in res.runs})
    nav = [("overview", "index.html")] + [(d, f"data_{d}.html") for d in datasets] + [
        ("training", "training.html"), ("what this is", "about.html")]
    if notebooks is not None:  # in every page's menu, not only on the notebooks index
        nav.append(("notebooks", "notebooks.html"))

    body = [f'<p class="warn">{html.escape(pages.LABEL)}</p>']
    planned, plan_note = not_started(results, profile)
    if res.missing or planned:
        body.append("<h2>Missing jobs</h2><p class='missing'>This run is not complete.</p>")
    if res.missing:
        body.append("<p>Started, not finished (no done.json):</p><ul id='incomplete'>"
                    + "".join(f"<li>{html.escape(m)}</li>" for m in res.missing) + "</ul>")
    if planned:
        body.append(f"<p>Planned by profile {html.escape(profile)} but never started:</p><ul id='not-started'>"
                    + "".join(f"<li>{html.escape(m)}</li>" for m in planned) + "</ul>")
    if plan_note:
        body.append(f"<p class='missing'>Only started jobs are checked: {html.escape(plan_note)}.</p>")
    if not res.tables:
        body.append("<p class='missing'>No comparison tables yet (compare/ is empty).</p>")
    else:
        body.append(overview_tables(res.long_csv))
    for name, text in res.tables.items():
        if not re.match(r"table[12]_", name):  # Tables 1-2 are shown above, in the paper's layout
            body.append(f"<h2>{html.escape(name)}</h2>{pages.md_table(text)}")
    for fig in res.figures:
        name = f"fig_{fig.stem}.png"
        im = Image.open(fig)
        im.thumbnail((1000, 1000))
        im.save(out / "img" / name, optimize=True)
        body.append(f'<h3>{html.escape(fig.stem)}</h3><img src="img/{name}" alt="{html.escape(fig.stem)}">')
    (out / "index.html").write_text(pages.page(f"tpslab results: {profile}", "".join(body), nav))

    for d in datasets:
        runs = [r for r in res.runs if r.dataset == d]
        order = paper_order(list(dict.fromkeys(r.entry for r in runs)))  # the paper's five, then ablation rows
        runs.sort(key=lambda r: order.index(r.entry))
        methods = [f"{r.entry}/{r.tag}" for r in runs]
        classes = sorted({c for r in runs for c in r.classes})
        shown = [r for r in runs if r.entry in PAPER_NAMES] or runs  # the gallery: the methods, not ablation rows
        rows = [row for c in classes for row in build_rows(shown, d, c, out / "img", dataset_dir(data_root, d))]
        status = "".join(f"<li>{html.escape(m)}: {'complete' if r.done else 'incomplete'}</li>"
                         for m, r in zip(methods, runs, strict=True))
        body_d = (f"<ul>{status}</ul>" + metrics_section(runs, res.long_csv, d) + "<h2>Gallery</h2>"
                  + pages.gallery(rows, [f"{r.entry}/{r.tag}" for r in shown]))
        (out / f"data_{d}.html").write_text(pages.page(f"{d} ({profile})", body_d, nav))

    tbody = []
    for k, (name, rows) in enumerate(res.histories.items()):
        png = f"loss_{k}.png"
        if _loss_png(rows, out / "img" / png):
            tbody.append(f'<h3>{html.escape(name)}</h3><img src="img/{png}" alt="loss curve">')
    (out / "training.html").write_text(pages.page("training", "".join(tbody) or "<p>No training histories.</p>",
                                                  nav))
    about = (f"<p class='warn'>{html.escape(pages.LABEL)}</p><table>"
             + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in [
                 ("profile", profile), ("results", results.name), ("tpslab version", tpslab.__version__),
                 ("git commit", _commit()), ("built", datetime.now(timezone.utc).isoformat(timespec="seconds")),
                 ("prediction runs", len(res.runs)), ("missing jobs", len(res.missing) + len(planned))]) + "</table>")
    (out / "about.html").write_text(pages.page("what this is", about, nav))
    if notebooks is not None:
        from tpslab.site.notebooks import index_body, render  # lazy: nbconvert only for --notebooks
        (out / "notebooks.html").write_text(pages.page("the course notebooks", index_body(render(notebooks, out)), nav))
    return out / "index.html"
