"""A torch Dataset over any ``meta.json``, with the paper's transforms.

Images: bicubic resize to S x S (aspect ratio not kept), to tensor, OpenAI mean/std.
Masks: bilinear resize to S x S, binarised at 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import Dataset
from torchvision import transforms as T

from tpslab.data.images import load_image, load_mask
from tpslab.data.meta import Meta, load_meta


def image_transform(size: int, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> Callable:
    """PIL image -> (3, size, size) float tensor, as the paper preprocesses."""
    return T.Compose([
        T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def mask_to_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) float mask in [0, 1] -> (size, size) {0, 1} tensor (bilinear resize, > 0.5)."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t[0, 0] > 0.5).float()


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
                 classes: list[str] | None = None, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD):
        self.meta = meta if isinstance(meta, Meta) else load_meta(meta)
        self.samples = self.meta.samples(split, classes)
        self.image_size = image_size
        self.transform = image_transform(image_size, mean, std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = self.transform(load_image(self.meta.path(s["img_path"])))
        has_mask = bool(s["mask_path"]) or s["anomaly"] == 0
        if s["mask_path"]:
            mask = mask_to_tensor(load_mask(self.meta.path(s["mask_path"])), self.image_size)
        else:
            mask = torch.zeros(self.image_size, self.image_size)
        return {"image": image, "mask": mask, "has_mask": has_mask, "label": int(s["anomaly"]),
                "cls_name": s["cls_name"], "img_path": s["img_path"], "index": index}
