"""tpslab: a reproducible lab for TPS (Text Prompt Shunt, AAAI 2025) on open_clip.

>>> import tpslab
>>> model = tpslab.build_model(backbone="tpslab-tiny", variant="paper", seed=0)  # doctest: +SKIP
>>> out = model.predict(images)  # doctest: +SKIP

One's own trained model comes back from its checkpoint, in eval mode:

>>> model = tpslab.load_checkpoint("results/my_run/checkpoint.pt")  # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``import tpslab.cli`` and
``tpslab --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # name -> the module that defines it
    "TPS": "tpslab.methods.tps.model", "Prediction": "tpslab.methods.tps.model", "TPSConfig": "tpslab.configs",
    "build_model": "tpslab.methods.tps.model", "TrainConfig": "tpslab.configs", "train": "tpslab.methods.train",
    "TPSLabError": "tpslab.utils", "load_checkpoint": "tpslab.methods.checkpoint",
    "load_authors_checkpoint": "tpslab.methods.authors", "load_anomalyclip_checkpoint": "tpslab.methods.authors",
    "build_method": "tpslab.methods",
}
__all__ = ["TPS", "TPSConfig", "Prediction", "TrainConfig", "TPSLabError", "build_model", "build_method",
           "load_checkpoint", "load_authors_checkpoint", "load_anomalyclip_checkpoint", "train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tpslab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, exports included."""
    return sorted(set(globals()) | set(__all__))
