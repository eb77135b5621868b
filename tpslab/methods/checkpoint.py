"""The tpslab checkpoint format: writing, reading, validating, and a safe ``torch.load``.

A checkpoint (``checkpoint.pt``, written after every epoch by :func:`tpslab.methods.train.train`)
is a dict::

    format          "tpslab-checkpoint-v1"
    method          the method's registry name ("tps", "anomalyclip"); absent = "tps" (older files)
    model_config    the method's settings (``TPSConfig.to_dict()``): enough to rebuild the model
    train_config    the TrainConfig as a dict (None when not trained here)
    epoch           finished epochs
    state           the learned parameters only (prompts, pathways, text projection)
    optimizer       the optimiser state (to resume)
    history         per-epoch losses
    data            what it was trained on: {"root", "split", "classes"} (absent in older files), so that
                    ``tpslab evaluate`` can tell when a model is evaluated on its own training data

Every file is read with ``weights_only=True`` (:func:`torch_load`), also the authors'
(:mod:`tpslab.methods.authors`), so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tpslab.methods import method_module
from tpslab.methods.base import Detector
from tpslab.utils import TPSLabError, atomic_torch_save

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "tpslab-checkpoint-v1"


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``, with one-line errors.

    Raises:
        TPSLabError: the file is missing or is not a readable torch file of plain tensors.
    """
    path = Path(path)
    if path.is_dir():
        inside = " (it holds one: give that file)" if (path / CHECKPOINT).is_file() else ""
        raise TPSLabError(f"{path} is a folder: expected a checkpoint file such as {path / CHECKPOINT}{inside}")
    if not path.is_file():
        raise TPSLabError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise TPSLabError(f"{path}: not a readable checkpoint (cannot read it as a torch file of tensors: "
                          f"{err.__class__.__name__})") from err


def data_record(dataset: Any) -> dict[str, Any] | None:
    """``{"root", "split", "classes"}`` of an :class:`~tpslab.data.dataset.AnomalyDataset` (or a Subset of one)."""
    base = getattr(dataset, "dataset", dataset)  # a torch Subset keeps its data set here
    meta = getattr(base, "meta", None)
    if meta is None:
        return None
    return {"root": str(meta.root), "split": getattr(base, "split", None),
            "classes": sorted({s["cls_name"] for s in base.samples})}


def save_checkpoint(path: str | os.PathLike, model: Detector, train_config: dict[str, Any] | None, epoch: int,
                    optimizer: torch.optim.Optimizer | None, history: list[dict[str, float]],
                    data: dict[str, Any] | None = None) -> None:
    """Atomically write a tpslab checkpoint (learned parameters + settings + progress + training data)."""
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "method": model.method,
        "model_config": model.config.to_dict(),
        "train_config": train_config,
        "epoch": epoch,
        "state": model.trainable_state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "history": history,
        "data": data,
    }, path)


def is_tpslab_checkpoint(obj: Any) -> bool:
    """Whether a loaded file is a tpslab checkpoint (rather than, say, the authors' released file)."""
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def read_checkpoint(path: str | os.PathLike,
                    hint: str = " (the authors' released file? use load_authors_checkpoint)") -> dict[str, Any]:
    """Load a tpslab checkpoint file as a dict, refusing anything else with a clear reason.

    Args:
        path: the file.
        hint: added to the error when the file is the authors' released checkpoint (the CLI names its flag).
    """
    ckpt = torch_load(path)
    if not is_tpslab_checkpoint(ckpt):
        theirs = isinstance(ckpt, dict) and "prompt_learner" in ckpt
        raise TPSLabError(f"{path}: not a tpslab checkpoint{hint if theirs else ''}")
    return ckpt


def load_state(model: Detector, state: dict[str, torch.Tensor], source: str) -> None:
    """Load learned parameters, explaining any shape or name mismatch in one line."""
    own = model.trainable_state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (f"shapes differ: {wrong[0]}" if wrong else
                  f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        variant = f", variant {model.config.variant}" if hasattr(model.config, "variant") else ""
        raise TPSLabError(f"{source}: does not fit this model ({model.method}, {model.config.backbone}{variant}): "
                          f"{detail}")
    model.load_state_dict(state, strict=False)


def load_checkpoint(path: str | os.PathLike, **overrides: Any) -> Detector:
    """Rebuild a trained model (TPS, AnomalyCLIP) from a tpslab checkpoint, in eval mode.

    Args:
        path: a ``checkpoint.pt`` written by :func:`tpslab.methods.train.train`.
        **overrides: model settings to change (e.g. ``pretrained`` pointing at a local file).

    Returns:
        The model, on the CPU.
    """
    ckpt = read_checkpoint(path)
    module = method_module(ckpt.get("method", "tps"))
    model = module.build(module.Settings.from_dict({**ckpt["model_config"], **overrides}))
    load_state(model, ckpt["state"], str(path))
    return model.eval()
