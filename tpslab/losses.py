"""Losses of TPS, exactly as the spec states them; :func:`tps_loss` is the total the training minimises.

``L = CE(image_logits, y) + sum_i [ Focal(S_i, mask) + Dice(S_i[a], mask) + Dice(S_i[n], 1 - mask) ]``

where ``S_i`` are the per-layer probabilities upsampled to the image, (B, 2, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tpslab.model import upsample_probs

if TYPE_CHECKING:
    from tpslab.model import TPSOutput

SMOOTH = 1e-5


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on probabilities (no alpha), averaged over pixels.

    With one-hot targets clamped to ``[1e-5, 1 - 1e-5]`` (label smoothing) and
    ``pt = sum_c onehot_c * p_c + 1e-5``: ``loss = -(1 - pt)^gamma * log(pt)``.

    Args:
        probs: (B, C, H, W) class probabilities.
        target: (B, H, W) integer-valued class map (here 0 normal, 1 anomalous).
        gamma: the focusing exponent (2 in the paper).
    """
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)  # (N, C)
    onehot = F.one_hot(target.reshape(-1).long(), c).to(p.dtype)
    onehot = onehot.clamp(SMOOTH / (c - 1), 1.0 - SMOOTH)
    pt = (onehot * p).sum(dim=1) + SMOOTH
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per image, averaged: ``1 - (2 sum(p m) + 1) / (sum(p) + sum(m) + 1)``.

    Args:
        prob: (B, H, W) probabilities of the foreground.
        target: (B, H, W) binary mask.
    """
    p, m = prob.flatten(1), target.flatten(1)
    dice = (2 * (p * m).sum(1) + 1) / (p.sum(1) + m.sum(1) + 1)
    return (1 - dice).mean()


def segmentation_loss(layer_probs: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Sum over layers of Focal + Dice(anomalous, mask) + Dice(normal, 1 - mask)."""
    total = masks.new_zeros(())
    for probs in layer_probs:  # (B, 2, H, W)
        total = total + focal_loss(probs, masks) + dice_loss(probs[:, 1], masks) + dice_loss(probs[:, 0], 1 - masks)
    return total


def image_loss(image_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the (already temperature-scaled) image logits (B, 2)."""
    return F.cross_entropy(image_logits, labels.long())


@dataclass
class LossTerms:
    """The loss of a batch and its two parts (scalar tensors)."""

    total: torch.Tensor  # image + segmentation: what is minimised
    image: torch.Tensor  # cross-entropy of the image logits
    segmentation: torch.Tensor  # focal + Dice, summed over the layers (0 without any mask)


def tps_loss(output: TPSOutput, masks: torch.Tensor, labels: torch.Tensor, has_mask: torch.Tensor,
             layer_weight: float = 1.0) -> LossTerms:
    """Paper Eq. 11 for one batch: image cross-entropy plus, per layer, focal and Dice losses.

    The patch logits of every layer are turned into probabilities and upsampled to the
    masks' size (:func:`tpslab.model.upsample_probs`). Images without a mask (``has_mask``
    False: anomalous images whose mask is unknown) count for the image loss only.

    Args:
        output: the model's :class:`tpslab.model.TPSOutput` for the batch.
        masks: (B, H, W) ground truth in {0, 1} (zeros where there is none).
        labels: (B,) 0 normal, 1 anomalous.
        has_mask: (B,) bool, whether ``masks`` holds the image's true mask.
        layer_weight: weight of each layer's segmentation terms (1 for TPS; AnomalyCLIP's
            published runs use 4 on one layer, the reference's ``lam``).

    Returns:
        The total and its two terms.
    """
    l_img = image_loss(output.image_logits, labels)
    keep = has_mask.bool()
    if keep.any():
        probs = [upsample_probs(p[keep], masks.shape[-1]) for p in output.patch_logits]  # (B', 2, H, W) each
        l_seg = layer_weight * segmentation_loss(probs, masks[keep])
    else:
        l_seg = masks.new_zeros(())
    return LossTerms(l_img + l_seg, l_img, l_seg)
