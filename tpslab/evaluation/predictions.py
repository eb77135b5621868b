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

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tpslab.utils import TPSLabError, atomic_path, atomic_write_json

SPEC, DONE = "spec.json", "done.json"
FORMAT = 1  # bump when the file layout changes: older runs are then recomputed


@dataclass
class ClassRun:
    """One class's stored predictions."""

    scores: np.ndarray  # (N,) float32 image scores
    maps: np.ndarray  # (N, S, S) float16, unsmoothed, at the method's input size
    labels: np.ndarray  # (N,) int 0/1
    has_mask: np.ndarray  # (N,) bool: False for an anomalous image without a mask (image metrics only)
    paths: list[str]  # image paths relative to the data set root
    defect_types: list[str]  # "good" or the defect type of each image


def class_file(folder: Path, cls: str) -> Path:
    """The file of one class (a class name made safe for a file name)."""
    return folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', cls)}.npz"


def _json(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples as lists), so specs compare equal after a round trip."""
    return json.loads(json.dumps(obj, sort_keys=True))


def read_spec(folder: Path) -> dict[str, Any] | None:
    """The spec a folder was made with, or None (no folder, or an unreadable spec)."""
    try:
        return json.loads((folder / SPEC).read_text())
    except (OSError, ValueError):
        return None


def is_done(folder: Path, spec: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete run made with ``spec``."""
    return (folder / DONE).is_file() and read_spec(folder) == _json({**spec, "format": FORMAT})


def start(folder: Path, spec: dict[str, Any]) -> None:
    """Make ``folder`` ready for a run with ``spec``: a stale run (other spec) is removed first."""
    spec = _json({**spec, "format": FORMAT})
    if folder.exists() and read_spec(folder) != spec:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if read_spec(folder) is None:
        atomic_write_json(folder / SPEC, spec)


def has_class(folder: Path, cls: str) -> bool:
    """Whether an (interrupted or complete) run already holds class ``cls``."""
    return class_file(folder, cls).is_file()


def save_class(folder: Path, cls: str, run: ClassRun) -> Path:
    """Write one class's predictions atomically (compressed; maps as float16)."""
    path = class_file(folder, cls)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, scores=np.asarray(run.scores, np.float32), maps=np.asarray(run.maps, np.float16),
                            labels=np.asarray(run.labels, np.int8), has_mask=np.asarray(run.has_mask, bool),
                            paths=np.asarray(run.paths, dtype=str),
                            defect_types=np.asarray(run.defect_types, dtype=str))
    return path


def load_class(folder: Path, cls: str) -> ClassRun:
    """One class's predictions.

    Raises:
        TPSLabError: the file is missing or unreadable (rerun ``tpslab compare`` to remake it).
    """
    path = class_file(folder, cls)
    try:
        with np.load(path) as f:
            return ClassRun(f["scores"], f["maps"], f["labels"].astype(int), f["has_mask"], f["paths"].tolist(),
                            f["defect_types"].tolist())
    except (OSError, KeyError, ValueError) as err:
        raise TPSLabError(f"{path}: stored predictions cannot be read ({err}); delete it and rerun") from err


def finish(folder: Path, counts: dict[str, int], image_size: int, sigma: float, mask_rule: str) -> None:
    """Mark a run complete: ``done.json`` with each class's image count and the method's reference protocol."""
    atomic_write_json(folder / DONE, {"classes": counts, "image_size": int(image_size), "sigma": float(sigma),
                                      "mask_rule": mask_rule})


def done_info(folder: Path) -> dict[str, Any]:
    """What ``done.json`` holds: ``classes`` (class -> images), the method's ``image_size``, ``sigma`` and rule."""
    try:
        info = json.loads((folder / DONE).read_text())
        info["classes"]  # noqa: B018 - a done.json without it is not one of ours
        return info
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TPSLabError(f"{folder}: not a complete prediction run ({DONE} missing or unreadable)") from err


def done_classes(folder: Path) -> dict[str, int]:
    """Class -> image count of a complete run."""
    return done_info(folder)["classes"]
