"""Training TPS on an auxiliary data set (the recipe of the spec), resumable.

The loop is thin: the model knows nothing about optimisers or files. CLIP is frozen
and TPS uses no augmentation, so the image features of an epoch are the same in every
epoch: with ``cache_features=True`` they are computed once and reused (exact, and
what makes CPU training of the small profiles fast).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tpslab.backbone import ImageFeatures
from tpslab.data.dataset import AnomalyDataset
from tpslab.losses import image_loss, segmentation_loss
from tpslab.model import TPS, TPSConfig, upsample_probs
from tpslab.utils import TPSLabError, atomic_torch_save, atomic_write_text, check_fields

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "tpslab-checkpoint-v1"


@dataclass
class TrainConfig:
    """The training recipe (defaults: the paper's, from the spec)."""

    epochs: int = 15  # passes over the auxiliary data
    batch_size: int = 8  # images per step
    lr_prompts: float = 1e-3  # Adam lr of both prompt learners
    lr_pathway: float = 1e-4  # Adam lr of the pathway(s) (and text projection, authors' code)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas
    seed: int = 111  # shuffling seed
    cache_features: bool = False  # compute frozen CLIP features once, reuse every epoch
    num_workers: int = 0  # DataLoader workers (when not caching)
    device: str = "auto"  # "auto", "cpu", "cuda"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a profile's or a checkpoint's), rejecting unknown keys."""
        check_fields(cls, data, "training")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TPSLabError("device 'cuda' asked for, but no GPU is available here")
    return torch.device(name)


def make_optimizer(model: TPS, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with two groups: prompt learners (lr_prompts) and pathway side (lr_pathway)."""
    prompts = [p for m in (model.global_prompts, model.shunt_prompts) for p in m.parameters() if p.requires_grad]
    pathway = [p for p in model.pathways.parameters() if p.requires_grad]
    if model.text_projection.requires_grad:  # the authors' pathway owns the text projection
        pathway.append(model.text_projection)
    groups = [{"params": prompts, "lr": cfg.lr_prompts}]
    if pathway:
        groups.append({"params": pathway, "lr": cfg.lr_pathway})
    return torch.optim.Adam(groups, betas=cfg.betas, foreach=True)


def compute_loss(model: TPS, feats: ImageFeatures, masks: torch.Tensor, labels: torch.Tensor,
                 has_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 11 for one batch; images without a mask count for the image loss only."""
    out = model.forward_features(feats)
    l_img = image_loss(out.image_logits, labels)
    size = masks.shape[-1]
    keep = has_mask.bool()
    if keep.any():
        probs = [upsample_probs(p[keep], size) for p in out.patch_logits]
        l_seg = segmentation_loss(probs, masks[keep])
    else:
        l_seg = masks.new_zeros(())
    loss = l_img + l_seg
    return loss, {"loss": loss.item(), "image_loss": l_img.item(), "seg_loss": l_seg.item()}


@dataclass
class Batch:
    feats: ImageFeatures
    masks: torch.Tensor
    labels: torch.Tensor
    has_mask: torch.Tensor


class FeatureCache:
    """All frozen features, masks and labels of a data set, held in memory."""

    def __init__(self, model: TPS, dataset: AnomalyDataset, batch_size: int, device: torch.device, progress: bool):
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
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            yield Batch(self.feats.index(idx).to(device), self.masks[idx].to(device),
                        self.labels[idx].to(device), self.has_mask[idx].to(device))


def loader_batches(model: TPS, dataset: AnomalyDataset, order: np.ndarray, cfg: TrainConfig,
                   device: torch.device) -> Iterator[Batch]:
    """Batches read from disk in the given order (no caching)."""
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=order.tolist(), num_workers=cfg.num_workers)
    for item in loader:
        yield Batch(model.encode_images(item["image"].to(device)), item["mask"].to(device),
                    item["label"].to(device), item["has_mask"].to(device))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of an epoch: a function of (seed, epoch) only, so resuming repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _history_csv(history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def save_checkpoint(path: Path, model: TPS, train_cfg: TrainConfig | None, epoch: int,
                    optimizer: torch.optim.Optimizer | None, history: list[dict[str, float]]) -> None:
    """Atomically write a tpslab checkpoint (learned parameters + configs + progress)."""
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config.to_dict(),
        "train_config": asdict(train_cfg) if train_cfg else None,
        "epoch": epoch,
        "state": model.trainable_state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "history": history,
    }, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a tpslab checkpoint file (weights_only), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise TPSLabError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise TPSLabError(f"{path}: not a readable checkpoint ({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        hint = " (the authors' released file? use load_authors_checkpoint)" if isinstance(ckpt, dict) and "former" in ckpt else ""
        raise TPSLabError(f"{path}: not a tpslab checkpoint{hint}")
    return ckpt


def load_state(model: TPS, state: dict[str, torch.Tensor], source: str) -> None:
    """Load learned parameters, explaining any shape or name mismatch in one line."""
    own = model.trainable_state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (f"shapes differ: {wrong[0]}" if wrong else
                  f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        raise TPSLabError(f"{source}: does not fit this model ({model.config.backbone}, variant {model.config.variant}): {detail}")
    model.load_state_dict(state, strict=False)


def load_checkpoint(path: str | Path, **overrides: Any) -> TPS:
    """Rebuild a trained TPS model from a tpslab checkpoint.

    Args:
        path: a ``checkpoint.pt`` written by :func:`train`.
        **overrides: model settings to change (e.g. ``pretrained`` pointing at a local file).
    """
    ckpt = read_checkpoint(path)
    cfg = TPSConfig.from_dict({**ckpt["model_config"], **overrides})
    model = TPS(cfg)
    load_state(model, ckpt["state"], str(path))
    return model


def train(
    model: TPS,
    dataset: AnomalyDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``dataset``; checkpoint after every epoch.

    Args:
        model: a TPS model (its learnable parameters are trained; CLIP stays frozen).
        dataset: the auxiliary data.
        cfg: the recipe.
        out_dir: where ``checkpoint.pt``, ``history.csv`` and ``train.log`` go.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (same settings).
        progress: show progress bars.
        log: where one-line messages go.

    Returns:
        The per-epoch history: epoch, loss, image_loss, seg_loss, seconds.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        if ckpt["model_config"] != model.config.to_dict():
            raise TPSLabError(f"{ckpt_path}: made with other model settings; cannot resume (use another output folder)")
        saved = {k: v for k, v in (ckpt["train_config"] or {}).items() if k != "epochs"}
        now = {k: v for k, v in asdict(cfg).items() if k != "epochs"}
        if {k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()} != {k: list(v) if isinstance(v, tuple) else v for k, v in now.items()}:
            raise TPSLabError(f"{ckpt_path}: made with other training settings; cannot resume")
        load_state(model, ckpt["state"], str(ckpt_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        log(f"resuming from {ckpt_path} after epoch {start_epoch}")
    elif (out / "train.log").exists():
        (out / "train.log").unlink()  # a fresh run starts a fresh log
    log(f"model: {model.config.to_dict()}")
    log(f"training: {asdict(cfg)}; {len(dataset)} images on {device}")
    model.train()
    cache = FeatureCache(model, dataset, cfg.batch_size, device, progress) if cfg.cache_features else None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        order = epoch_order(len(dataset), cfg.seed, epoch)
        batches = cache.batches(order, cfg.batch_size, device) if cache else loader_batches(model, dataset, order, cfg, device)
        sums: dict[str, float] = {}
        n_batches = (len(order) + cfg.batch_size - 1) // cfg.batch_size
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for batch in bar:
            loss, parts = compute_loss(model, batch.feats, batch.masks, batch.labels, batch.has_mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
        row = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}, "seconds": round(time.time() - t0, 2)}
        history.append(row)
        save_checkpoint(ckpt_path, model, cfg, epoch + 1, optimizer, history)
        atomic_write_text(out / "history.csv", _history_csv(history))
        line = f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f} (image {row['image_loss']:.4f}, seg {row['seg_loss']:.4f}), {row['seconds']:.1f}s"
        log(line)
        with open(out / "train.log", "a") as fh:
            fh.write(line + "\n")
    model.eval()
    return history
