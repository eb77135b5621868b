"""What produced a result, and never replacing one without ``--force``.

* :func:`refuse_existing`: a one-line error naming the first output already there.
* :func:`write_run_json`: ``run.json`` beside the outputs of ``evaluate`` and ``predict``: the
  method, the checkpoint or weights, the backbone, the settings, the tpslab version and the
  command, so a table or a map says what made it.

Nothing here imports torch.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tpslab.utils import TPSLabError, atomic_write_json

RUN_JSON = "run.json"


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
    from tpslab import __version__

    record = {"method": method, **plain(weights), "backbone": backbone, "settings": plain(settings),
              "tpslab_version": __version__, "command": shlex.join(command if command is not None else
                                                                   ["tpslab", *sys.argv[1:]]),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **plain(extra)}
    path = Path(folder) / name
    atomic_write_json(path, record)
    return path
