"""Losses of TPS as the paper states them (Eq. 11); :func:`tps_loss` is the total the training minimises.

``L = CE(image_logits, y) + sum_i [ Focal(S_i, mask) + Dice(S_i[a], mask) + Dice(S_i[n], 1 - mask) ]``

where ``S_i`` are the per-layer probabilities upsampled to the image, (B, 2, H, W).

Computed without anything that is not the math: with two classes the normal map is
``S_i[n] = 1 - S_i[a]`` (softmax rows sum to 1, and bilinear weights too), so only the
anomalous maps are upsampled, all layers at once, as two matrix products; the focal loss picks each pixel's
true-class probability with ``where`` instead of a one-hot target; both Dice terms come from
three sums per map (``sum p``, ``sum m``, ``sum p m``). Equal to the literal formulas to float
rounding (tests/test_losses.py keeps the literal version and checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from tpslab.methods.tps.model import TPSOutput

SMOOTH = 1e-5


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Two-class focal loss on probabilities (no alpha), averaged over pixels.

    With one-hot targets clamped to ``[1e-5, 1 - 1e-5]`` (label smoothing) and
    ``pt = sum_c onehot_c * p_c + 1e-5``: ``loss = -(1 - pt)^gamma * log(pt)``. For two classes
    whose probabilities sum to 1, ``pt = (1 - 2e-5) p_true + 2e-5`` with ``p_true`` the
    probability of the pixel's class.

    Args:
        prob: (..., H, W) probability of the anomalous class.
        target: (..., H, W) binary class map (1 anomalous), broadcastable to ``prob``.
        gamma: the focusing exponent (2 in the paper).
    """
    p_true = torch.where(target > 0.5, prob, 1 - prob)
    pt = p_true * (1 - 2 * SMOOTH) + 2 * SMOOTH
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


def segmentation_loss(anomalous: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Sum over layers of Focal + Dice(anomalous, mask) + Dice(normal, 1 - mask).

    Args:
        anomalous: (K, B, H, W) upsampled probabilities of the anomalous class, K layers.
        masks: (B, H, W) binary ground truth.

    Returns:
        The sum over the K layers of each layer's loss (focal and Dice averaged over its images).
    """
    k, b, h, w = anomalous.shape
    m = masks.to(anomalous.dtype)
    focal = focal_loss(anomalous, m) * k  # each layer's pixel mean, summed over the layers
    sp = anomalous.sum(dim=(-2, -1))  # (K, B)
    sm = m.sum(dim=(-2, -1))  # (B,)
    spm = (anomalous * m).sum(dim=(-2, -1))  # (K, B)
    n = h * w  # float32 sums of n values: relative rounding ~1e-7, as the literal formulas' own
    dice_a = 1 - (2 * spm + 1) / (sp + sm + 1)  # Dice(S[a], m)
    dice_n = 1 - (2 * (n - sp - sm + spm) + 1) / ((n - sp) + (n - sm) + 1)  # Dice(1 - S[a], 1 - m)
    return focal + (dice_a + dice_n).mean(dim=1).sum()


def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation, align_corners False (``F.interpolate``'s).

    Built by interpolating the identity, so the source positions and weights are torch's own.
    Bilinear upsampling of a (g, g) map is then ``W @ P @ W.T``: two small matrix products,
    whose backward pass is two more (torch's bilinear backward kernel scatters pixel by pixel).
    """
    eye = torch.eye(n_in, dtype=dtype, device=device)[None]  # (1, n_in, n_in): row i = basis vector i
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T  # (n_out, n_in)


def upsample_anomalous(layer_logits: list[torch.Tensor], size: int) -> torch.Tensor:
    """Per-layer (B, L, 2) patch logits -> (K, B, size, size) anomalous probabilities.

    Softmax, then bilinear upsampling (align_corners False) of the anomalous channel only, all
    layers at once as two matrix products (:func:`interpolation_matrix`): channel 1 of
    :func:`tpslab.methods.tps.model.upsample_probs` for each layer, to float rounding.
    """
    logits = torch.stack(layer_logits)  # (K, B, L, 2)
    k, b, length, _ = logits.shape
    g = math.isqrt(length)
    p = logits.softmax(dim=-1)[..., 1].reshape(k, b, g, g)  # (K, B, g, g)
    w = interpolation_matrix(g, size, p.dtype, p.device)  # (S, g)
    return w @ p @ w.T  # (K, B, S, S)


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
    masks' size (:func:`upsample_anomalous`, as :func:`tpslab.methods.tps.model.upsample_probs` does). Images
    without a mask (``has_mask`` False: anomalous images whose mask is unknown) count for the
    image loss only.

    Args:
        output: the model's :class:`tpslab.methods.tps.model.TPSOutput` for the batch.
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
    if keep.all():
        anomalous = upsample_anomalous(output.patch_logits, masks.shape[-1])  # (K, B, H, W)
        l_seg = layer_weight * segmentation_loss(anomalous, masks)
    elif keep.any():
        anomalous = upsample_anomalous([p[keep] for p in output.patch_logits], masks.shape[-1])  # (K, B', H, W)
        l_seg = layer_weight * segmentation_loss(anomalous, masks[keep])
    else:
        l_seg = masks.new_zeros(())
    return LossTerms(l_img + l_seg, l_img, l_seg)
