"""The one-screen summary of ``benchmarks/gpu_check.sh``: machine, benchmark ratios, reproduce's outputs, time.

    python benchmarks/gpu_summary.py OUT SECONDS [BUDGET_SECONDS]

Reads ``OUT/benchmarks/*.csv`` and ``OUT/reproduce/`` (tables, figures); prints the summary and
writes it to ``OUT/summary.txt``. Exits 1 if something the check needs is missing or the
time is over the budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch


def machine() -> str:
    """The device the check ran on, in words."""
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}"
    import os
    import platform

    return f"CPU only ({platform.machine()}, {os.cpu_count()} cores); torch {torch.__version__}"


def _csv(folder: Path, stem: str) -> pd.DataFrame | None:
    found = sorted(folder.glob(f"{stem}*.csv"))
    return pd.read_csv(found[0]) if found else None


def summary(out: Path, seconds: float, budget: float) -> tuple[list[str], list[str]]:
    """(lines, problems) of a finished check in ``out``."""
    bench, repro = out / "benchmarks", out / "reproduce"
    lines = [f"gpu_check: {machine()}", f"total {seconds:.0f} s (budget {budget:.0f} s)"]
    problems = [] if seconds <= budget else [f"over the time budget: {seconds:.0f} s > {budget:.0f} s"]
    ev = _csv(bench, "evaluate")
    if ev is None:
        problems.append("no evaluate benchmark CSV")
    else:
        for _, r in ev.iterrows():
            lines.append(f"evaluate {r['case']:18s} {r['images']:4d} img  {r['images_per_s']:8.1f} img/s  "
                         f"{r['evaluate_over_forward']:5.2f}x CLIP forward  {r['precision']}  "
                         f"peak {r['peak_mb']:.0f} MB")
    tr = _csv(bench, "train")
    if tr is not None:
        for _, r in tr.iterrows():
            lines.append(f"train    {r['case']:18s} {r['way']:12s} {r['step_ms']:8.1f} ms/step ({r['speedup']:.1f}x) "
                         f"set-up {r['setup_s']:.1f} s")
    me = _csv(bench, "metrics")
    if me is not None:
        best = me.dropna(subset=["speedup"]).sort_values("speedup").tail(3)
        for _, r in best.iterrows():
            lines.append(f"metrics  {r['group']}: {r['method']} {r['speedup']:.0f}x")
    figures = sorted(p.name for p in (repro / "figures").glob("*.png")) if (repro / "figures").is_dir() else []
    tables = sorted(p.name for p in (repro / "tables").glob("*.md")) if (repro / "tables").is_dir() else []
    lines.append(f"reproduce: {len(figures)} figures, {len(tables)} tables in {repro}")
    if not (figures or tables):
        problems.append("tpslab reproduce wrote no figures or tables")
    main = next((repro / "tables" / t for t in tables if "03" in t), None)
    if main is not None:
        lines += [ln for ln in main.read_text().splitlines() if "mean" in ln][:3]
    bench_figure = bench / "benchmarks.png"
    lines.append(f"benchmark figure: {bench_figure}" if bench_figure.is_file() else "no benchmark figure")
    if not bench_figure.is_file():
        problems.append("no benchmark figure")
    return lines, problems


def main() -> None:
    """Print and write the summary; exit 1 on a problem."""
    out, seconds = Path(sys.argv[1]), float(sys.argv[2])
    budget = float(sys.argv[3]) if len(sys.argv) > 3 else 480.0
    lines, problems = summary(out, seconds, budget)
    lines += [f"PROBLEM: {p}" for p in problems] or ["OK"]
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text, end="")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
