"""Training runs on disk: a folder with ``checkpoint.pt``, ``history.csv`` and ``run.json``.

``run.json`` is the run's spec (the method's settings, the training recipe, the data set, the
tpslab version): a folder whose spec equals the wanted one is a finished run and is reused
(:func:`tpslab.store.first_with`), so notebooks 02 and 04 and ``tpslab compare`` never train the
same model twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

import tpslab
from tpslab.data.dataset import AnomalyDataset, per_class_subset
from tpslab.methods import method_module
from tpslab.methods.base import Detector
from tpslab.methods.checkpoint import CHECKPOINT, load_checkpoint
from tpslab.methods.train import TrainConfig, train
from tpslab.profiles import Profile
from tpslab.store import first_with, plain, write_spec
from tpslab.utils import shown

RUN_FILE = "run.json"  # beside each checkpoint: what it was trained with
log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """A folder name for a table row: "A2 (TPS)" -> "a2-tps"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_spec(profile: Profile, device: str, dataset: str, model_settings: dict | None = None,
             train_settings: dict | None = None, per_class: int | None = None, method: str = "tps") -> dict[str, Any]:
    """What a training run of :func:`train_run` is made with (its ``run.json``): equal specs, equal runs."""
    cfg = method_module(method).Settings.from_dict({**profile.method_settings(method), **(model_settings or {})})
    tcfg = TrainConfig.from_dict({**profile.train, **(train_settings or {}), "device": device})
    recipe = {k: v for k, v in asdict(tcfg).items() if not (k == "threads" and v is None)}  # specs made before it
    return plain({"model": cfg.to_dict(), "train": recipe, "dataset": dataset, "per_class": per_class,
                       "tpslab": tpslab.__version__, **({"method": method} if method != "tps" else {})})


def finished_run(folders: list[Path], spec: dict[str, Any]) -> Path | None:
    """The first folder holding a finished training run made with ``spec``, or None."""
    return first_with(folders, spec, RUN_FILE, needs=(CHECKPOINT,))


def train_run(profile: Profile, device: str, meta: Path, out_dir: Path, dataset: str,
              model_settings: dict | None = None, train_settings: dict | None = None, per_class: int | None = None,
              reuse: list[Path] = (), method: str = "tps") -> tuple[Detector, pd.DataFrame]:
    """Train TPS or AnomalyCLIP (profile settings + overrides) on a data set; reuse a finished identical run if any.

    The method's settings are the profile's (``model`` for TPS, ``methods.<name>`` otherwise),
    the training recipe is the profile's ``train`` section for both: one loop, one recipe.

    Args:
        profile: the profile.
        device: where to train.
        meta: the data set's ``meta.json``.
        out_dir: the run's folder.
        dataset: the data set's name (part of the spec).
        model_settings: overrides of the method's settings.
        train_settings: overrides of the training recipe.
        per_class: at most this many training images per class.
        reuse: other folders where an identical finished run may be.
        method: ``"tps"`` or ``"anomalyclip"``.
    """
    spec = run_spec(profile, device, dataset, model_settings, train_settings, per_class, method)
    found = finished_run([out_dir, *reuse], spec)
    if found is not None:
        log.info("reusing the finished run in %s (delete it to train again)", shown(found))
        return load_checkpoint(found / CHECKPOINT).to(device), pd.read_csv(found / "history.csv")
    module = method_module(method)
    cfg, tcfg = module.Settings.from_dict(spec["model"]), TrainConfig.from_dict(spec["train"])
    model = module.build(cfg)
    data = AnomalyDataset(meta, model.image_size)
    data = per_class_subset(data, per_class) if per_class else data
    what = f"variant {cfg.variant}" if method == "tps" else method
    log.info("training on %s: %d images, %d epochs, %s", dataset, len(data), tcfg.epochs, what)
    history = train(model, data, tcfg, out_dir, progress=False)
    write_spec(out_dir, spec, RUN_FILE)
    return model, pd.DataFrame(history)
