"""A torch Dataset over any ``meta.json``, with the paper's transforms, and picking examples from it.

Images: bicubic resize to S x S (aspect ratio not kept), to tensor, OpenAI mean/std.
Masks: bilinear resize to S x S, binarised at 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from tpslab.data.images import as_rgb, load_image, load_mask
from tpslab.data.meta import Meta, load_meta
from tpslab.utils import TPSLabError


def image_transform(size: int, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> Callable:
    """PIL image of any mode (greyscale, RGBA, 16-bit...) -> (3, size, size) float tensor, as the paper preprocesses."""
    return T.Compose([
        T.Lambda(as_rgb),
        T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def to_rgb(image: torch.Tensor, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> np.ndarray:
    """A preprocessed (3, H, W) tensor back to an (H, W, 3) uint8 image (the inverse of :func:`image_transform`)."""
    x = image.detach().cpu().float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


MASK_RULES = ("gt_half", "eq_one")  # how a resized mask is binarised (see mask_to_tensor)


def mask_to_tensor(mask: np.ndarray, size: int, rule: str = "gt_half") -> torch.Tensor:
    """(H, W) float mask in [0, 1] -> (size, size) {0, 1} tensor: bilinear resize, then binarised.

    ``rule="gt_half"``: ``> 0.5``, as every method is scored by default. ``"eq_one"``: only pixels
    that are exactly 1 after the resize, MuSc's reference (``astype(np.int32)`` after a bilinear
    resize, musc.py:253), which erodes each defect's boundary.

    >>> mask_to_tensor(np.array([[0.0, 1.0], [1.0, 1.0]]), 4, "eq_one").sum() < mask_to_tensor(
    ...     np.array([[0.0, 1.0], [1.0, 1.0]]), 4).sum()
    tensor(True)
    """
    if rule not in MASK_RULES:
        raise TPSLabError(f"mask rule must be one of {MASK_RULES}, got {rule!r}")
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return ((t[0, 0] > 0.5) if rule == "gt_half" else (t[0, 0] >= 1.0)).float()


class AnomalyDataset(Dataset):
    """Samples of one split of a data set.

    Each item is a dict: ``image`` (3, S, S), ``mask`` (S, S) in {0, 1}, ``has_mask``
    (False for an anomalous image without a mask: use it for image metrics only),
    ``label`` (0/1), ``cls_name``, ``img_path``, ``index``.

    Args:
        meta: a loaded :class:`Meta` or the path of a ``meta.json`` (or its folder).
        image_size: S.
        split: ``"test"`` (what zero-shot work uses) or ``"train"``.
        classes: restrict to these classes.
    """

    def __init__(self, meta: Meta | str | os.PathLike, image_size: int, split: str = "test",
                 classes: list[str] | None = None, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD,
                 mask_rule: str = "gt_half"):
        self.mask_rule = mask_rule  # see mask_to_tensor
        self.meta = meta if isinstance(meta, Meta) else load_meta(meta)
        self.split = split
        self.samples = self.meta.samples(split, classes)
        self.image_size = image_size
        self.transform = image_transform(image_size, mean, std)

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The sample's image, mask, labels and paths (see the class docstring)."""
        s = self.samples[index]
        image = self.transform(load_image(self.meta.path(s["img_path"])))
        has_mask = bool(s["mask_path"]) or s["anomaly"] == 0
        if s["mask_path"]:
            mask = mask_to_tensor(load_mask(self.meta.path(s["mask_path"])), self.image_size, self.mask_rule)
        else:
            mask = torch.zeros(self.image_size, self.image_size)
        return {"image": image, "mask": mask, "has_mask": has_mask, "label": int(s["anomaly"]),
                "cls_name": s["cls_name"], "specie_name": s.get("specie_name", ""), "img_path": s["img_path"],
                "index": index}


def pick_examples(labels: Sequence[int], classes: Sequence[str], n: int, n_anomalous: int | None = None) -> list[int]:
    """Indices of ``n`` examples: anomalous ones first, each group spread over the classes.

    Within each group (``n_anomalous`` anomalous, default ``n - n // 2``, then the normal
    ones) the classes take turns, in the order they first appear in the group, and each
    class gives its candidates in the given order: for candidates sorted by some quality,
    the best of each class come first. A group short of candidates stays short.

    >>> pick_examples([1, 1, 0, 1, 0, 0], ["a", "a", "a", "b", "b", "b"], 4)
    [0, 3, 2, 4]
    """
    k = n - n // 2 if n_anomalous is None else min(n_anomalous, n)
    chosen: list[int] = []
    for label, count in ((1, k), (0, n - k)):
        queues: dict[str, list[int]] = {}
        for i, (y, c) in enumerate(zip(labels, classes, strict=True)):
            if y == label:
                queues.setdefault(c, []).append(i)
        turns = [queue[::-1] for queue in queues.values()]  # popped from the end
        picked, turn = 0, 0
        while picked < count and any(turns):
            queue = turns[turn % len(turns)]
            turn += 1
            if queue:
                chosen.append(queue.pop())
                picked += 1
    return chosen


@dataclass
class Examples:
    """A few dataset items (``AnomalyDataset`` dicts), with what figures and tables need of them."""

    items: list[dict[str, Any]]

    @property
    def images(self) -> torch.Tensor:
        """(N, 3, S, S) preprocessed images."""
        return torch.stack([it["image"] for it in self.items])

    @property
    def masks(self) -> list[np.ndarray]:
        """(S, S) masks in {0, 1}."""
        return [it["mask"].numpy() for it in self.items]

    @property
    def labels(self) -> list[int]:
        """0 normal, 1 anomalous."""
        return [it["label"] for it in self.items]

    @property
    def classes(self) -> list[str]:
        """The class of each item."""
        return [it["cls_name"] for it in self.items]

    @property
    def rgb(self) -> list[np.ndarray]:
        """(S, S, 3) uint8 images for display."""
        return [to_rgb(it["image"]) for it in self.items]


def load_examples(meta: Meta | str | os.PathLike, image_size: int, n: int, n_anomalous: int | None = None,
                  split: str = "test") -> Examples:
    """``n`` test images of a data set chosen by :func:`pick_examples` (anomalous first, spread over classes)."""
    ds = AnomalyDataset(meta, image_size, split)
    picks = pick_examples([s["anomaly"] for s in ds.samples], [s["cls_name"] for s in ds.samples], n, n_anomalous)
    return Examples([ds[i] for i in picks])


def per_class_subset(dataset: AnomalyDataset, per_class: int) -> Subset:
    """The first ``per_class`` samples of each class, in the data set's order (a deterministic training subset)."""
    seen: dict[str, int] = {}
    keep = []
    for i, s in enumerate(dataset.samples):
        seen[s["cls_name"]] = seen.get(s["cls_name"], 0) + 1
        if seen[s["cls_name"]] <= per_class:
            keep.append(i)
    return Subset(dataset, keep)
