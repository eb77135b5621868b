"""A small results tree with the real layout: compare tables, stored predictions, a training history."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tpslab.data.meta import write_meta
from tpslab.evaluation import predictions
from tpslab.runs.score import METRICS, PROTOCOLS

METHODS = ["tps", "winclip"]
CLASSES = ["bottle", "screw"]


def site_source(root: Path) -> tuple[Path, Path, str]:
    """(results folder, data root, profile) the browser tests build their site from.

    ``$TPSLAB_SITE_RESULTS`` (a real ``results/<profile>`` folder, as ``make site-test`` passes
    the one ``make nbval`` left) with its data under ``$TPSLAB_SITE_DATA`` (default: ``data``
    beside the results root); otherwise a fake tree written under ``root``.
    """
    real = os.environ.get("TPSLAB_SITE_RESULTS")
    if real:
        results = Path(real).resolve()
        return results, Path(os.environ.get("TPSLAB_SITE_DATA") or results.parent.parent / "data"), results.name
    return make_results(root), root / "data", "fake"


def make_results(root: Path, complete: bool = True, n: int = 12, size: int = 16) -> Path:
    """Write ``root/results/fake`` (and images under ``root/data/synth``); the path of the results folder.

    With ``complete=False`` the second method's run has one class and no done.json (an interrupted compare).
    """
    res = root / "results" / "fake"
    rng = np.random.default_rng(0)
    data = root / "data" / "synth"
    samples: dict[str, list[dict]] = {}
    for k, method in enumerate(METHODS):
        folder = res / "predictions" / method / "synth" / "r0"
        predictions.start(folder, {"method": method})
        classes = CLASSES if complete or k == 0 else CLASSES[:1]
        for cls in classes:
            labels = np.array([0, 1] * (n // 2))
            paths = [f"{cls}/test/{i}.png" for i in range(n)]
            for p, label in zip(paths, labels, strict=True):
                (data / p).parent.mkdir(parents=True, exist_ok=True)
                if not (data / p).exists():
                    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(data / p)
                mask = p.replace("/test/", "/ground_truth/") if label else ""
                if mask and not (data / mask).exists():
                    (data / mask).parent.mkdir(parents=True, exist_ok=True)
                    square = np.zeros((24, 24), np.uint8)
                    square[6:14, 6:14] = 255
                    Image.fromarray(square).save(data / mask)
            samples[cls] = [{"img_path": p, "mask_path": p.replace("/test/", "/ground_truth/") if v else "",
                             "cls_name": cls, "specie_name": "scratch" if v else "good", "anomaly": int(v)}
                            for p, v in zip(paths, labels, strict=True)]
            run = predictions.ClassPredictions(rng.random(n).astype(np.float32) + labels,
                                       rng.random((n, size, size)).astype(np.float16), labels,
                                       labels.astype(bool), paths, ["good" if v == 0 else "scratch" for v in labels])
            predictions.save_class(folder, cls, run)
        if complete or k == 0:
            predictions.finish(folder, {c: n for c in classes}, size, 4.0, "any")
            write_scores(folder, classes, rng)
    write_meta({"train": {}, "test": samples}, data)
    cmp = res / "compare"
    cmp.mkdir(parents=True, exist_ok=True)
    write_tables(cmp / "tables")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(cmp / "intervals.png")
    train = res / "train" / "main"
    train.mkdir(parents=True)
    (train / "history.json").write_text(json.dumps([{"epoch": i, "loss": 1.0 / (i + 1)} for i in range(5)]))
    return res


def fake_summary() -> pd.DataFrame:
    """A :func:`tpslab.runs.score.summarise`-shaped table: tps (run main) and winclip on synth and mvtec.

    tps's image AUROC on synth is 90.1 [88.0, 92.0]; every other value differs.
    """
    rows, k = [], 0
    for protocol in PROTOCOLS:
        for entry, run in (("tps", "main"), ("winclip", "")):
            for dataset in ("synth", "mvtec"):
                for metric in METRICS:
                    mean = 90.1 if k == 0 else 40.0 + k * 0.7
                    rows.append({"entry": entry, "method": entry, "dataset": dataset, "run": run, "ablation": False,
                                 "protocol": protocol, "metric": metric, "mean": mean, "std": np.nan, "seeds": 1,
                                 "ci_low": mean - 2.1, "ci_high": mean + 1.9, "classes": len(CLASSES)})
                    k += 1
    return pd.DataFrame(rows)


def write_tables(folder: Path) -> None:
    """The long CSVs of Tables 1-2 (made by tpslab.reports.paper_tables from :func:`fake_summary`) and a Table 3."""
    from tpslab.reports import paper_tables as ct

    folder.mkdir(parents=True, exist_ok=True)
    summary = fake_summary()
    for protocol in PROTOCOLS:
        for number in (1, 2):
            long = ct.long_table(summary, number, protocol, {"synth": "main", "mvtec": "main"})
            (folder / f"table{number}_{protocol}_long.csv").write_text(long.to_csv(index=False, float_format="%.4f"))
            layout = ct.layout(long, number, ["tps", "winclip"], "tpslab fake")
            (folder / f"table{number}_{protocol}.md").write_text(
                "| " + " | ".join(layout.columns) + " |\n|" + "---|" * len(layout.columns) + "\n")
    (folder / "table3_reference.md").write_text("table3, reference\n\n| Task | Dataset |\n|---|---|\n"
                                                "| Classification | HeadCT |\n")


def write_scores(folder: Path, classes: list[str], rng: np.random.Generator, n_boot: int = 50) -> None:
    """The per-class score caches ``tpslab compare`` leaves beside a run (fractions; random, in [0.5, 1))."""
    for protocol in PROTOCOLS:
        arrays = {"key": np.asarray("fake")}
        for c in classes:
            for m in METRICS:
                arrays[f"{c}|point|{m}"] = np.asarray(0.5 + 0.4 * rng.random())
                arrays[f"{c}|boot|{m}"] = arrays[f"{c}|point|{m}"] + 0.05 * (rng.random(n_boot) - 0.5)
        np.savez(folder / f"scores-{protocol}.npz", **arrays)
