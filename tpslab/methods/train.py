"""Training TPS on an auxiliary data set (the recipe of the spec), resumable.

The loop is thin: the model knows nothing about optimisers or files. CLIP is frozen
and TPS uses no augmentation, so the image features of an epoch are the same in every
epoch: with ``cache_features=True`` they are computed once and reused (exact, and
what makes CPU training of the small profiles fast).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tpslab.backbone.cache import CacheRoomError, FeatureStore, encode_cached
from tpslab.backbone.core import ImageFeatures
from tpslab.configs import NO_EFFECT_ON_RESULTS, TrainConfig
from tpslab.data.dataset import AnomalyDataset
from tpslab.methods.base import Detector
from tpslab.methods.checkpoint import CHECKPOINT, data_record, load_state, read_checkpoint, save_checkpoint
from tpslab.methods.tps.losses import LossTerms, tps_loss
from tpslab.utils import TPSLabError, atomic_write_text, resolve_device

log = logging.getLogger(__name__)  # one line per epoch (and the run's settings), as in train.log
RESUMABLE = ("epochs", *NO_EFFECT_ON_RESULTS)  # may differ when resuming (more epochs extend the run)


def make_optimizer(model: Detector, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with two groups: prompt learners (lr_prompts) and pathway side (lr_pathway, if any).

    The groups come from the model's ``parameter_groups()`` (TPS, AnomalyCLIP).
    """
    params = model.parameter_groups()
    groups = [{"params": params["prompts"], "lr": cfg.lr_prompts}]
    if params["pathway"]:
        groups.append({"params": params["pathway"], "lr": cfg.lr_pathway})
    return torch.optim.Adam(groups, betas=cfg.betas, foreach=True)


@dataclass
class Batch:
    """One training batch: frozen features and the targets."""

    feats: ImageFeatures
    masks: torch.Tensor
    labels: torch.Tensor
    has_mask: torch.Tensor


class FeatureCache:
    """All frozen features, masks and labels of a data set, held in memory (read from ``store`` where cached)."""

    def __init__(self, model: Detector, dataset: AnomalyDataset, batch_size: int, device: torch.device, progress: bool,
                 store: FeatureStore | None = None):
        found = encode_cached(model, dataset, batch_size, device, store, progress) if store else None
        if found is not None:
            self.feats, self.masks, self.labels, self.has_mask = found
            return
        feats, masks, labels, has_mask = [], [], [], []
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for item in tqdm(loader, desc="caching CLIP features", disable=not progress, leave=False):
            feats.append(model.encode_images(item["image"].to(device)))
            masks.append(item["mask"])
            labels.append(item["label"])
            has_mask.append(item["has_mask"])
        self.feats = ImageFeatures(torch.cat([f.embedding for f in feats]),
                                   [torch.cat([f.patches[i] for f in feats]) for i in range(len(feats[0].patches))])
        self.masks, self.labels, self.has_mask = torch.cat(masks), torch.cat(labels), torch.cat(has_mask)

    def batches(self, order: np.ndarray, batch_size: int, device: torch.device) -> Iterator[Batch]:
        """The cached samples in ``order``, ``batch_size`` at a time, moved to ``device``."""
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            yield Batch(self.feats.index(idx).to(device), self.masks[idx].to(device, torch.float32),
                        self.labels[idx].to(device), self.has_mask[idx].to(device))


def loader_batches(model: Detector, dataset: AnomalyDataset, order: np.ndarray, cfg: TrainConfig,
                   device: torch.device) -> Iterator[Batch]:
    """Batches read from disk in the given order (no caching)."""
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=order.tolist(), num_workers=cfg.num_workers)
    for item in loader:
        yield Batch(model.encode_images(item["image"].to(device)), item["mask"].to(device),
                    item["label"].to(device), item["has_mask"].to(device))


def batch_loss(model: Detector, feats: Any, masks: torch.Tensor, labels: torch.Tensor,
               has_mask: torch.Tensor) -> LossTerms:
    """The loss training minimises for one batch.

    :func:`tpslab.methods.tps.losses.tps_loss` with the method's layer weight.
    """
    return tps_loss(model.forward_features(feats), masks, labels, has_mask, layer_weight=model.layer_weight)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of an epoch: a function of (seed, epoch) only, so resuming repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _history_csv(history: list[dict[str, float]]) -> str:
    """The history as CSV text."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def train(
    model: Detector,
    dataset: AnomalyDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``dataset``; checkpoint after every epoch.

    Args:
        model: a trainable detector, TPS or AnomalyCLIP (its learnable parameters are trained; CLIP stays frozen).
        dataset: the auxiliary data.
        cfg: the recipe.
        out_dir: where ``checkpoint.pt``, ``history.csv`` and ``train.log`` go.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (same settings; only those of
            ``RESUMABLE`` may differ: more epochs extend the run). ``tpslab train --resume`` takes
            the settings from the checkpoint (:func:`tpslab.cli.settings.resume_settings`).
        progress: show progress bars.

    Returns:
        The per-epoch history: epoch, loss, image_loss, seg_loss, seconds.

    Raises:
        TPSLabError: an empty data set (before anything is written), or a checkpoint made with other settings.
    """
    if len(dataset) == 0:
        raise TPSLabError("no images to train on (an empty split or class list)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))  # the speed (and float summation order) the run was made with
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        if ckpt.get("method", "tps") != model.method or ckpt["model_config"] != model.config.to_dict():
            raise TPSLabError(f"{ckpt_path}: made with other model settings; cannot resume (use another output folder)")
        def comparable(d: dict[str, Any]) -> dict[str, Any]:  # what changes results (epochs may extend the run)
            return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if k not in RESUMABLE}
        if comparable(ckpt["train_config"] or {}) != comparable(asdict(cfg)):
            raise TPSLabError(f"{ckpt_path}: made with other training settings; cannot resume")
        load_state(model, ckpt["state"], str(ckpt_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        log.info(f"resuming from {ckpt_path} after epoch {start_epoch}")
    elif (out / "train.log").exists():
        (out / "train.log").unlink()  # a fresh run starts a fresh log
    log.info(f"model: {model.config.to_dict()}")
    shown_cfg = {k: v for k, v in asdict(cfg).items() if not (k == "threads" and v is None)}
    if not model.parameter_groups()["pathway"]:
        shown_cfg.pop("lr_pathway")  # no pathway to train (AnomalyCLIP, ablation A1): a rate it would not use
    log.info(f"training: {shown_cfg}; {len(dataset)} images on {device}")
    model.train()
    store = FeatureStore(model, dtype=cfg.cache_dtype) if cfg.cache_features and cfg.disk_cache else None
    try:
        cache = FeatureCache(model, dataset, cfg.batch_size, device, progress, store) if cfg.cache_features else None
    except CacheRoomError as err:  # before any training: the run goes on, encoding every step
        log.info(f"{err}; training without the feature cache")
        cache = store = None
    if store is not None:
        log.info(f"feature cache: {store.hits} images read, {store.misses} encoded (see `tpslab cache info`)")
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        order = epoch_order(len(dataset), cfg.seed, epoch)
        batches = (cache.batches(order, cfg.batch_size, device) if cache else
                   loader_batches(model, dataset, order, cfg, device))
        sums: dict[str, float] = {}
        n_batches = (len(order) + cfg.batch_size - 1) // cfg.batch_size
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for batch in bar:
            loss = batch_loss(model, batch.feats, batch.masks, batch.labels, batch.has_mask)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            parts = {"loss": loss.total.item(), "image_loss": loss.image.item(), "seg_loss": loss.segmentation.item()}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
        row = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}, "seconds": round(time.time() - t0, 2)}
        history.append(row)
        save_checkpoint(ckpt_path, model, asdict(cfg), epoch + 1, optimizer, history, data_record(dataset))
        atomic_write_text(out / "history.csv", _history_csv(history))
        line = (f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f} (image {row['image_loss']:.4f}, "
                f"seg {row['seg_loss']:.4f}), {row['seconds']:.1f}s")
        log.info(line)
        with open(out / "train.log", "a") as fh:
            fh.write(line + "\n")
    model.eval()
    return history
