"""One figure of the benchmark CSVs under ``results/benchmarks/``: ``benchmarks.png`` (and ``.pdf``).

Panels, each drawn when its CSV is there (the ``_quick`` CSVs stand in for the full ones):
evaluation time per stage and per model against CLIP's forward alone (``evaluate*.csv``),
training step time with and without the feature cache (``train*.csv``), and the pixel
metrics' speed-up over their baselines (``metrics*.csv``).

    python benchmarks/plot_benchmarks.py [--dir results/benchmarks] [--quick]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
STAGES = ["load_s", "forward_s", "smoothing_s", "metrics_s"]


def _read(folder: Path, stem: str, quick: bool) -> pd.DataFrame | None:
    """``stem.csv`` (or ``stem_quick.csv`` when ``quick`` or the full one is missing)."""
    for name in ([f"{stem}_quick"] if quick else [stem, f"{stem}_quick"]):
        if (folder / f"{name}.csv").is_file():
            return pd.read_csv(folder / f"{name}.csv")
    return None


def _evaluate(ax: plt.Axes, table: pd.DataFrame) -> None:
    per_case = table.set_index("case")
    left = pd.Series(0.0, index=per_case.index)
    for stage in [s for s in STAGES if s in per_case]:
        share = per_case[stage] / per_case["clip_forward_s"]
        ax.barh(per_case.index, share, left=left, label=stage[:-2])
        left += share
    ax.axvline(1.0, color="k", lw=0.8, label="CLIP forward alone")
    ax.axvline(1.25, color="k", lw=0.8, ls="--", label="target: forward + 25 %")
    for case, r in per_case.iterrows():
        ax.annotate(f" {r['evaluate_over_forward']:.2f}x, {r['images_per_s']:.3g} img/s", (left[case], case),
                    va="center", fontsize=7)
    ax.set_xlabel("evaluation time / CLIP forward time")
    ax.set_title("evaluate: time per stage")
    ax.legend(fontsize=7, loc="lower right")


def _train(ax: plt.Axes, table: pd.DataFrame) -> None:
    wide = table.pivot(index="case", columns="way", values="speedup")
    wide.plot.barh(ax=ax)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("training step speed-up over no cache")
    ax.set_ylabel("")
    ax.set_title("train: feature cache")
    ax.legend(fontsize=7)


def _metrics(ax: plt.Axes, table: pd.DataFrame) -> None:
    rows = table.dropna(subset=["speedup"])
    labels = rows["group"] + ": " + rows["method"]
    ax.barh(labels, rows["speedup"])
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the group's baseline")
    ax.set_title("pixel metrics")
    ax.tick_params(axis="y", labelsize=6)


def main() -> None:
    """Draw the panels whose CSVs exist and save the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(RESULTS), help="folder of the CSVs and the figure")
    ap.add_argument("--quick", action="store_true", help="use the _quick CSVs")
    args = ap.parse_args()
    folder = Path(args.dir)
    panels = [(fn, t) for fn, stem in ((_evaluate, "evaluate"), (_train, "train"), (_metrics, "metrics"))
              if (t := _read(folder, stem, args.quick)) is not None]
    if not panels:
        raise SystemExit(f"no benchmark CSVs in {folder}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (fn, table) in zip(axes[0], panels, strict=True):
        fn(ax, table)
    fig.suptitle("tpslab benchmarks (random weights; " + ("quick sizes" if args.quick else "see the CSVs") + ")")
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(folder / f"benchmarks.{suffix}", dpi=120)
    print(f"wrote {folder / 'benchmarks.png'} and .pdf")


if __name__ == "__main__":
    main()
