"""What a results folder holds: comparison tables, stored prediction runs, training histories.

Everything is read from disk; nothing runs a model. A half-done folder (an interrupted
``tpslab compare``) is read as far as it goes and the runs without ``done.json`` are listed as missing.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpslab.evaluation import predictions
from tpslab.profiles import load_profile
from tpslab.runs.plan import plan, prediction_folder, train_folder
from tpslab.utils import TPSLabError


@dataclass
class PredRun:
    """One stored prediction run: ``predictions/<entry>/<dataset>/<tag>``."""

    entry: str
    dataset: str
    tag: str
    folder: Path
    done: bool
    classes: list[str]  # classes with a stored npz file


@dataclass
class Results:
    """The parts of ``results/<profile>/`` the site shows."""

    root: Path
    tables: dict[str, str] = field(default_factory=dict)  # name -> Markdown text
    long_csv: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # name -> rows
    figures: list[Path] = field(default_factory=list)  # PNG files of compare/ and figures/
    runs: list[PredRun] = field(default_factory=list)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run name -> epoch records

    @property
    def missing(self) -> list[str]:
        """The prediction runs that are not complete, as ``entry/dataset/tag``."""
        return [f"{r.entry}/{r.dataset}/{r.tag}" for r in self.runs if not r.done]


def _runs(pred_root: Path) -> list[PredRun]:
    """Every run folder under ``predictions/`` (three levels deep), complete or not."""
    runs = []
    for folder in sorted(pred_root.glob("*/*/*")):
        if not folder.is_dir():
            continue
        entry, dataset, tag = folder.relative_to(pred_root).parts
        done = (folder / predictions.DONE).is_file()
        classes = sorted(p.stem for p in folder.glob("*.npz") if not p.stem.startswith("_"))
        if done:
            try:
                classes = sorted(predictions.done_classes(folder))
            except Exception:  # noqa: BLE001 - an unreadable done.json makes the run incomplete
                done = False
        runs.append(PredRun(entry, dataset, tag, folder, done, classes))
    return runs


def _histories(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Training histories: every ``history.json`` (a list of epoch records) or ``history.csv`` below root."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.rglob("history.json")) + sorted(root.rglob("history.csv")):
        name = str(path.parent.relative_to(root))
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                rows = data if isinstance(data, list) else data.get("epochs", [])
            else:
                with path.open() as f:
                    rows = list(csv.DictReader(f))
        except (OSError, ValueError, AttributeError):
            continue
        if rows:
            out[name] = rows
    return out


def collect(root: str | Path) -> Results:
    """Read ``results/<profile>/`` as far as it exists."""
    root = Path(root)
    res = Results(root)
    cmp = root / "compare"
    for path in sorted(cmp.rglob("*.md")):
        res.tables[path.stem] = path.read_text()
    for path in sorted(cmp.rglob("*.csv")):
        with path.open() as f:
            res.long_csv[path.stem] = list(csv.DictReader(f))
    res.figures = sorted(cmp.rglob("*.png")) + sorted((root / "figures").glob("*.png"))
    res.runs = _runs(root / "predictions")
    res.histories = _histories(root)
    return res


def not_started(root: str | Path, profile: str) -> tuple[list[str], str]:
    """The profile's planned jobs (as ``tpslab compare`` plans them) that left nothing on disk under ``root``.

    A job counts as started when its own folder exists (an incomplete prediction folder is also in
    :attr:`Results.missing`); a train job also when a prediction folder made with its model exists
    (an ablation row may reuse notebook 02's run instead of writing its own folder).

    Returns:
        ``(jobs, note)``: each job's name and the folder it would write; ``note`` says why no plan
        was made ("" when one was), e.g. for a profile that cannot be loaded.
    """
    root = Path(root)
    try:
        jobs = plan(load_profile(profile))
    except (TPSLabError, OSError, ValueError) as err:
        return [], f"the planned jobs of profile {profile!r} are unknown ({str(err).splitlines()[0]})"
    used = {(j.entry, j.run, j.replicate, j.ablation) for j in jobs
            if j.kind == "predict" and prediction_folder(root, j).is_dir()}  # trained models in use
    out = []
    for job in jobs:
        where = prediction_folder(root, job) if job.kind == "predict" else train_folder(root, job)
        started = where.is_dir() or (job.kind == "train" and (job.entry, job.run, job.replicate, job.ablation) in used)
        if not started:
            out.append(f"{job.name} (would write {where.relative_to(root)})")
    return out, ""
