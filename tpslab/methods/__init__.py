"""The detectors of the paper's Tables 1-2 behind one interface (see :mod:`tpslab.methods.base`).

>>> from tpslab.methods import build_method, available_methods
>>> method = build_method("clip", backbone="tpslab-tiny")  # doctest: +SKIP

Each method lives in its own module, which defines ``Settings`` (a dataclass with
``from_dict`` rejecting unknown keys) and ``build(settings) -> Detector``. Modules are
imported only when their method is built, so the CLI starts quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from tpslab.utils import TPSLabError

METHODS: dict[str, str] = {  # name -> module
    "tps": "tpslab.methods.tps",
    "clip": "tpslab.methods.clip",
    "winclip": "tpslab.methods.winclip",
    "anomalyclip": "tpslab.methods.anomalyclip",
    "musc": "tpslab.methods.musc",
}
TRAINED = ("tps", "anomalyclip")  # the methods that learn from auxiliary data (their Detector.trains)


def available_methods() -> list[str]:
    """Names of the methods whose module is present."""
    return [name for name, module in METHODS.items() if importlib.util.find_spec(module) is not None]


def method_module(name: str) -> ModuleType:
    """The module of method ``name`` (it defines ``Settings`` and ``build``)."""
    if name not in METHODS or importlib.util.find_spec(METHODS[name]) is None:
        raise TPSLabError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return importlib.import_module(METHODS[name])


def build_method(name: str, **settings: Any):
    """Build detector ``name`` from keyword settings (unknown keys are rejected).

    Args:
        name: ``"tps"``, ``"clip"``, ``"winclip"``, ``"anomalyclip"`` or ``"musc"``.
        **settings: fields of the method's ``Settings`` dataclass.

    Returns:
        A :class:`tpslab.methods.base.Detector`.
    """
    module = method_module(name)
    return module.build(module.Settings.from_dict(settings))
