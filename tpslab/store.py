"""The spec-keyed store, what produced a result, and never replacing one without ``--force``.

Every folder tpslab reuses is keyed by a *spec*: a JSON dict of what made it. A training run
holds ``run.json``, a prediction run ``spec.json`` (and ``done.json`` once complete); the
feature cache and the score cache key their entries by :func:`digest` of their spec. One
mechanism for all four:

* :func:`plain`: a spec as JSON gives it back (tuples as lists, other objects as text), so specs
  compare equal after a round trip; :func:`digest`: its SHA-256;
* :func:`write_spec` / :func:`read_spec`: a spec file in a folder (atomic; unreadable -> None);
* :func:`first_with`: the first of some folders whose spec file equals a spec and that holds
  the files a finished result needs.

And for the outputs of ``evaluate`` and ``predict``:

* :func:`refuse_existing`: a one-line error naming the first output already there.
* :func:`write_run_json`: ``run.json`` beside the outputs of ``evaluate`` and ``predict``: the
  method, the checkpoint or weights, the backbone, the settings, the tpslab version and the
  command, so a table or a map says what made it.

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tpslab import __version__
from tpslab.utils import TPSLabError, atomic_write_json

RUN_JSON = "run.json"


def digest(obj: Any) -> str:
    """The SHA-256 (hex) of ``obj``'s canonical JSON: the key of a spec.

    >>> digest({"b": 1, "a": (2, 3)}) == digest({"a": [2, 3], "b": 1})
    True
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def write_spec(folder: str | os.PathLike, spec: dict[str, Any], name: str) -> Path:
    """Write ``spec`` to ``<folder>/<name>`` atomically; return the path."""
    path = Path(folder) / name
    atomic_write_json(path, plain(spec))
    return path


def read_spec(folder: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The spec in ``<folder>/<name>``, or None (no file, or an unreadable one)."""
    try:
        return json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError):
        return None


def first_with(folders: Iterable[str | os.PathLike], spec: dict[str, Any], name: str,
               needs: tuple[str, ...] = ()) -> Path | None:
    """The first folder whose ``name`` holds ``spec`` and that has every file of ``needs``, or None."""
    want = plain(spec)
    for folder in map(Path, folders):
        if all((folder / n).is_file() for n in needs) and read_spec(folder, name) == want:
            return folder
    return None


def refuse_existing(paths: Iterable[str | os.PathLike], force: bool, what: str = "a previous run's result") -> None:
    """Refuse to replace any of ``paths`` unless ``force``.

    Raises:
        TPSLabError: naming the first path that exists and ``--force``.
    """
    if force:
        return
    for path in map(Path, paths):
        if path.exists():
            raise TPSLabError(f"{path} already holds {what}: add --force to replace it, or choose another --out")


def plain(value: Any) -> Any:
    """``value`` as JSON takes it (tuples as lists, paths and other objects as text)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_run_json(folder: str | os.PathLike, method: str, weights: dict[str, Any], backbone: str | None,
                   settings: dict[str, Any], command: list[str] | None = None, name: str = RUN_JSON,
                   **extra: Any) -> Path:
    """Write ``<folder>/run.json``: what produced the results beside it.

    Args:
        folder: the output folder.
        method: ``tps``, ``clip``, ...
        weights: where the model came from, e.g. ``{"checkpoint": path}`` or ``{"pretrained": "openai"}``.
        backbone: the CLIP architecture.
        settings: the method's and the run's settings (plain values).
        command: the command line (default: this process's).
        name: the file name.
        **extra: more keys (data set, split, classes, outputs).

    Returns:
        The path written.
    """
    record = {"method": method, **plain(weights), "backbone": backbone, "settings": plain(settings),
              "tpslab_version": __version__, "command": shlex.join(command if command is not None else
                                                                   ["tpslab", *sys.argv[1:]]),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **plain(extra)}
    path = Path(folder) / name
    atomic_write_json(path, record)
    return path
