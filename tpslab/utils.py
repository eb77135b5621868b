"""Small shared helpers: user-facing errors, paths, devices, atomic file writes, seeding."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported where it is used, so that ``tpslab --help`` starts without it
    import torch

PROJECT = Path(__file__).resolve().parents[1]  # the source checkout (if this is one)


class TPSLabError(Exception):
    """An error caused by the user's input (a file, a flag, a data set).

    The CLI prints these as a single line, without a traceback.
    """


def project_path(path: str | os.PathLike) -> Path:
    """A relative path is taken from the project root in a source checkout (notebooks run in notebooks/)."""
    path = Path(path)
    if path.is_absolute() or not (PROJECT / "notebooks").is_dir():
        return path.absolute()
    return PROJECT / path


def shown(path: str | os.PathLike) -> str:
    """A path as notebooks and messages print it: relative to the project root when inside it."""
    path = Path(path).absolute()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def check_device_name(name: str) -> str:
    """Check the spelling of a device name (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) without importing torch.

    Raises:
        TPSLabError: any other name.
    """
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise TPSLabError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return name


def resolve_device(name: str) -> torch.device:
    """The one device convention: ``"auto"`` (a GPU if there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        TPSLabError: an unknown name, or a GPU asked for where there is none.
    """
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TPSLabError(f"device {name!r} asked for, but no GPU is available here")
    return torch.device(name)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    Nothing is left at ``path`` if the body raises, and readers never see a
    half-written file (``os.replace`` is atomic on one file system).

    >>> with atomic_path("out.csv") as tmp:  # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes it 0600; a written file follows the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a truncated file behind."""
    import torch

    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(obj, tmp)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise a one-line error naming any key of ``data`` that is not a field of dataclass ``cls``."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise TPSLabError(f"unknown {what} setting(s): {', '.join(unknown)}")


class SettingsDict:
    """Mixin for a settings dataclass: ``from_dict`` rejecting unknown keys, ``to_dict`` with plain values.

    The subclass names its ``SECTION`` (used in error messages: "unknown clip setting(s): ...").
    """

    SECTION: ClassVar[str] = "settings"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a dict (a profile's, a checkpoint's, ``--set`` pairs), rejecting unknown keys."""
        check_fields(cls, data, cls.SECTION)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (tuples as lists): what checkpoints and results store."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
