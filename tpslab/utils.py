"""Small shared helpers: user-facing errors, paths, devices, atomic file writes, seeding."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
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

    The subclass names its ``SECTION`` (used in error messages: "unknown clip setting(s): ...") and
    may override :meth:`coerce` for values a file gives in another form (a list for a tuple).
    Every settings dataclass of tpslab is built this way.
    """

    SECTION: ClassVar[str] = "settings"

    @classmethod
    def coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The known keys' values in the form the dataclass takes (default: as given)."""
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a dict (a profile's, a checkpoint's, ``--set`` pairs), rejecting unknown keys."""
        check_fields(cls, data, cls.SECTION)
        return cls(**cls.coerce(dict(data)))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (tuples as lists): what checkpoints and results store."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


RANDOM_WEIGHTS = ("none", "None", "null", "")  # what --pretrained takes for seeded random weights


def weights_arg(text: str) -> str:
    """``--pretrained``: a tag or a file; ``none``/``None``/``null``/``''`` mean random weights (returned as ``''``)."""
    return "" if text.strip() in RANDOM_WEIGHTS else text


def check_writable_dir(path: str | os.PathLike, flag: str = "--out", advice: str | None = None) -> Path:
    """Check, before any work, that folder ``path`` exists or can be made, and can be written to.

    Raises:
        TPSLabError: one line naming the flag and the path (a file on the way, read-only, no permission).
    """
    path = Path(path)
    advice = advice or f"choose another {flag}"
    for parent in [path, *path.parents]:
        if parent.exists():
            break
    if not parent.is_dir():
        raise TPSLabError(f"{flag} {path}: {parent} is a file, not a folder; {advice}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TPSLabError(f"{flag} {path}: {parent} cannot be written to (read-only or no permission); {advice}")
    try:  # os.access does not see a read-only mount for every user (root): try it
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tpslab-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise TPSLabError(f"{flag} {path}: {parent} cannot be written to ({err.strerror}); {advice}") from err
    return path


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce_setting(cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` checked against the type of field ``key`` of dataclass ``cls`` (and converted where safe).

    An int is taken for a float, a YAML 1.1 string such as ``'1e-3'`` for a float, a list for a
    tuple; anything else of the wrong type is refused.

    Raises:
        TPSLabError: one line naming ``where`` (e.g. ``train.epochs``), the value and the expected type.
    """
    import types
    import typing

    hints = typing.get_type_hints(cls)
    if key not in hints:
        return value
    hint = hints[key]
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        got = _as_type(option, value)
        if got is not _NO:
            return got
    expected = " or ".join("null" if o is type(None) else _type_name(typing.get_origin(o) or o) for o in options)
    expected = expected.replace("int", "a whole number").replace("float", "a number").replace("bool", "true/false")
    raise TPSLabError(f"{where}={value!r}: expected {expected}")


_NO = object()


def _as_type(hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` if it is one (or converts safely), else ``_NO``."""
    import typing

    origin = typing.get_origin(hint)
    if hint is type(None):
        return None if value is None else _NO
    if hint is bool:
        return value if isinstance(value, bool) else _NO
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return _NO
        return _NO
    if hint is str:
        return value if isinstance(value, str) else _NO
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _NO
        args = typing.get_args(hint)
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or len(set(args)) == 1) else None
        if inner is None:
            return tuple(value)
        items = [_as_type(inner, v) for v in value]
        return _NO if any(i is _NO for i in items) else tuple(items)
    return value  # any other annotation (dict, ...): not checked here


def check_types(cls: type, data: dict[str, Any], section: str) -> dict[str, Any]:
    """Every value of ``data`` checked (and converted) by :func:`coerce_setting`; ``section`` prefixes messages."""
    return {k: coerce_setting(cls, k, v, f"{section}.{k}") for k, v in data.items()}


class _StdoutHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is when a line is logged (notebooks, redirections, tests)."""

    @property
    def stream(self) -> Any:  # noqa: D102
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Send tpslab's progress lines (its modules' loggers) to ``sys.stdout``, one plain line each.

    The command line and the notebooks call this; a library user leaves logging as it is (or
    configures the ``tpslab`` logger as they like). Calling it again changes nothing but the level.
    """
    logger = logging.getLogger("tpslab")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
