"""Table writers: CSV, Markdown and LaTeX, with no extra dependency.

Every table tpslab writes (``tpslab evaluate``, the notebooks, ``tpslab compare``) goes through
:func:`write_table`; :func:`nan_notes` says in words why a per-class table shows ``nan``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from tpslab.utils import atomic_write_text


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """A Markdown table (no extra dependency), metrics rounded to ``digits``."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i in range(len(table)):  # per column, so integer columns stay integers (iterrows would upcast)
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in (table[c].iloc[i] for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: str | Path, note: str | None = None, latex: bool = False) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` (and ``stem.tex``) atomically; ``note`` heads the Markdown and LaTeX."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    atomic_write_text(paths[0], table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(paths[1], (f"{note}\n\n" if note else "") + to_markdown(table))
    if latex:
        paths.append(stem.with_suffix(".tex"))
        atomic_write_text(paths[2], to_latex(table, note))
    return paths


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (no extra dependency); floats with one decimal, ``caption`` as a comment."""
    def cell(v: Any) -> str:
        text = f"{v:.1f}" if isinstance(v, float) else str(v)
        return re.sub(r"([&%_#$])", r"\\\1", text)
    lines = [f"% {caption}" if caption else "%", "\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\toprule",
             " & ".join(cell(c) for c in table.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in table.itertuples(index=False)]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


def nan_notes(table: pd.DataFrame) -> list[str]:
    """Why a table of :func:`evaluate` shows ``nan``, and what its ``mean`` row averages (one sentence each)."""
    rows = table[table["class"] != "mean"]
    notes = []
    for _, r in rows.iterrows():
        if r["anomalous"] == 0 or r["anomalous"] == r["images"]:
            only = "normal" if r["anomalous"] == 0 else "anomalous"
            notes.append(f"{r['class']}: nan image metrics, its {r['images']} images are all {only} (AUROC and AP "
                         "need both kinds)")
        if math.isnan(r["pixel_auroc"]) and 0 < r["anomalous"]:
            notes.append(f"{r['class']}: nan pixel metrics, none of its anomalous images has a mask")
        elif math.isnan(r["pixel_auroc"]):
            notes.append(f"{r['class']}: nan pixel metrics, no anomalous pixels to find")
    if notes and len(rows) > 1:
        notes.append("mean: each metric is averaged over the classes where it is defined (nan skipped); its images "
                     "and anomalous columns count every class")
    return notes
