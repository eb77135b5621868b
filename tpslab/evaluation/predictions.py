"""Stored predictions: what one (method, data set, replicate) run predicted, written once and reused.

Every table, interval and figure of ``tpslab compare`` is computed from these files, never
by running a model again. One run is a folder::

    predictions/<entry>/<dataset>/<tag>/
        spec.json        what produced it (method, settings or the checkpoint's run.json, data, tpslab version)
        <class>.npz      per class: scores (N,) float32, maps (N, S, S) float16 unsmoothed at the method's
                         input size S, labels, has_mask, paths, defect types (np.savez_compressed)
        done.json        written last: the run is complete (its classes and image counts)

Each file is written atomically. A folder whose ``spec.json`` differs from the wanted spec is
stale and is cleared before the run starts again; a complete folder with the same spec is
reused; an interrupted one keeps the classes it finished. Storage: about ``2 S^2`` bytes per
image before compression (0.5 MB at 518 px).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tpslab.store import plain, read_spec, write_spec
from tpslab.utils import TPSLabError, atomic_path

SPEC, DONE = "spec.json", "done.json"
FORMAT = 1  # bump when the file layout changes: older runs are then recomputed


@dataclass
class ClassPredictions:
    """Everything predicted for one class: what is stored, and what evaluation scores.

    Stored runs hold unsmoothed float16 maps at the method's input size and no masks;
    :func:`tpslab.evaluation.evaluate.predict_dataset` gives smoothed maps and the ground truth.
    """

    scores: np.ndarray  # (N,) float32 image scores
    maps: np.ndarray  # (N, S, S) anomaly maps
    labels: np.ndarray  # (N,) int 0/1
    has_mask: np.ndarray  # (N,) bool: False for an anomalous image without a mask (image metrics only)
    paths: list[str]  # image paths relative to the data set root
    defect_types: list[str] = field(default_factory=list)  # "good" or the defect type of each image
    masks: np.ndarray | None = None  # (N, S, S) ground truth in {0, 1}, when loaded


def class_file(folder: Path, cls: str) -> Path:
    """The file of one class (a class name made safe for a file name)."""
    return folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', cls)}.npz"


def is_done(folder: Path, spec: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete run made with ``spec``."""
    return (folder / DONE).is_file() and read_spec(folder, SPEC) == plain({**spec, "format": FORMAT})


def start(folder: Path, spec: dict[str, Any]) -> None:
    """Make ``folder`` ready for a run with ``spec``: a stale run (other spec) is removed first."""
    spec = plain({**spec, "format": FORMAT})
    if folder.exists() and read_spec(folder, SPEC) != spec:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if read_spec(folder, SPEC) is None:
        write_spec(folder, spec, SPEC)


def has_class(folder: Path, cls: str) -> bool:
    """Whether an (interrupted or complete) run already holds class ``cls``."""
    return class_file(folder, cls).is_file()


def save_class(folder: Path, cls: str, run: ClassPredictions) -> Path:
    """Write one class's predictions atomically (compressed; maps as float16)."""
    path = class_file(folder, cls)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, scores=np.asarray(run.scores, np.float32), maps=np.asarray(run.maps, np.float16),
                            labels=np.asarray(run.labels, np.int8), has_mask=np.asarray(run.has_mask, bool),
                            paths=np.asarray(run.paths, dtype=str),
                            defect_types=np.asarray(run.defect_types, dtype=str))
    return path


def load_class(folder: Path, cls: str) -> ClassPredictions:
    """One class's predictions.

    Raises:
        TPSLabError: the file is missing or unreadable (rerun ``tpslab compare`` to remake it).
    """
    path = class_file(folder, cls)
    try:
        with np.load(path) as f:
            return ClassPredictions(f["scores"], f["maps"], f["labels"].astype(int), f["has_mask"], f["paths"].tolist(),
                            f["defect_types"].tolist())
    except (OSError, KeyError, ValueError) as err:
        raise TPSLabError(f"{path}: stored predictions cannot be read ({err}); delete it and rerun") from err


def finish(folder: Path, counts: dict[str, int], image_size: int, sigma: float, mask_rule: str) -> None:
    """Mark a run complete: ``done.json`` with each class's image count and the method's reference protocol."""
    write_spec(folder, {"classes": counts, "image_size": int(image_size), "sigma": float(sigma),
                        "mask_rule": mask_rule}, DONE)


def done_info(folder: Path) -> dict[str, Any]:
    """What ``done.json`` holds: ``classes`` (class -> images), the method's ``image_size``, ``sigma`` and rule."""
    info = read_spec(folder, DONE)
    if not isinstance(info, dict) or not isinstance(info.get("classes"), dict):  # not one of ours
        raise TPSLabError(f"{folder}: not a complete prediction run ({DONE} missing or unreadable)")
    return info


def done_classes(folder: Path) -> dict[str, int]:
    """Class -> image count of a complete run."""
    return done_info(folder)["classes"]
