"""Profiles: one YAML file per scale of work (``tpslab/profiles/*.yaml``).

* ``smoke``: tiny random CLIP, synthetic data, CPU, minutes (the default; what CI runs);
* ``course``: ViT-B-16 ``openai`` at 224, small data, a laptop CPU;
* ``paper``: ViT-L-14-336 ``openai`` at 518, the paper's data sets and recipe, a GPU.

A profile names the model settings (:class:`tpslab.model.TPSConfig` fields), the training
recipe (:class:`tpslab.train.TrainConfig` fields), the data, and evaluation options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tpslab.utils import TPSLabError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass
class Profile:
    """A parsed profile file."""

    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    evaluate: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Load a built-in profile by name, or any profile YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TPSLabError(f"unknown profile {str(name_or_path)!r}; built in: {', '.join(available_profiles())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TPSLabError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    missing = [k for k in ("name", "model", "train", "data") if k not in raw]
    if missing:
        raise TPSLabError(f"{path}: missing section(s) {', '.join(missing)}")
    known = {"name", "description", "model", "train", "data", "evaluate", "device"}
    return Profile(name=raw["name"], description=raw.get("description", ""), model=raw["model"] or {},
                   train=raw["train"] or {}, data=raw["data"] or {}, evaluate=raw.get("evaluate") or {},
                   device=raw.get("device", "auto"), extra={k: v for k, v in raw.items() if k not in known})


def data_root(override: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``override``, else ``$TPSLAB_DATA``, else ``./data``."""
    return Path(override or os.environ.get("TPSLAB_DATA") or "data")


def results_root(override: str | os.PathLike | None = None) -> Path:
    """Where results go: ``override``, else ``$TPSLAB_RESULTS``, else ``./results``."""
    return Path(override or os.environ.get("TPSLAB_RESULTS") or "results")
