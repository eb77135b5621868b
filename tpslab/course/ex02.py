"""Checks of notebook 02's exercises: the Dice and focal losses of Eq. 11."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tpslab.course.checks import exercise, expect, seeds
from tpslab.methods.tps.losses import dice_loss, focal_loss


def _probs(seed: int, b: int = 2, size: int = 12, empty: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(b, 2, size, size, generator=g).softmax(1)  # (B, 2, H, W)
    masks = (torch.rand(b, size, size, generator=g) < 0.3).float()  # (B, H, W)
    if empty:
        masks[0] = 0
    return probs, masks


def _cases(hidden: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_probs(s) for s in seeds(hidden)] + ([_probs(7, empty=True)] if hidden else [])


@exercise("e2.1", "the soft Dice loss")
def dice(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(prob (B, H, W), target (B, H, W)) -> scalar``, the Dice loss per image, averaged."""
    cases = _cases(hidden) + [_probs(5, empty=True)]
    for probs, masks in cases:
        p = probs[:, 1]
        no_one = lambda p=p, m=masks: (1 - 2 * (p * m).flatten(1).sum(1) / (p.flatten(1).sum(1)  # noqa: E731
                                                                         + m.flatten(1).sum(1))).mean()
        pooled = lambda p=p, m=masks: 1 - (2 * (p * m).sum() + 1) / (p.sum() + m.sum() + 1)  # noqa: E731
        expect(fn(p.clone(), masks.clone()), dice_loss(p, masks), {
            "Dice without the +1: add 1 to the numerator and to the denominator (an empty mask must not give 0/0)":
                no_one,
            "compute Dice per image (sums over its pixels), then average over the images": pooled,
        }, "expected mean over images of 1 - (2 sum(p m) + 1) / (sum(p) + sum(m) + 1)")
    return len(cases)


@exercise("e2.2", "the focal loss")
def focal(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(probs (B, 2, H, W), target (B, H, W), gamma) -> scalar``, the focal loss averaged over pixels."""
    cases = _cases(hidden)
    for probs, masks in cases:
        pt = probs.gather(1, masks.long()[:, None])[:, 0]  # (B, H, W): probability of the true class
        expect(fn(probs.clone(), masks.clone(), 2.0), focal_loss(probs[:, 1], masks, 2.0), {
            "that is the cross-entropy: multiply each pixel's -log(pt) by (1 - pt) ** gamma":
                lambda pt=pt: -pt.log().mean(),
            "pt is the probability of the *true* class (channel target), not of channel 1":
                lambda p=probs: (-(1 - p[:, 1]).pow(2) * p[:, 1].log()).mean(),
            "average over the pixels, not sum": lambda pt=pt: (-(1 - pt).pow(2) * pt.log()).sum(),
            "the factor is (1 - pt) ** gamma, not pt ** gamma": lambda pt=pt: (-pt.pow(2) * pt.log()).mean(),
        }, "expected mean over pixels of -(1 - pt) ** gamma * log(pt), pt the probability of the true class",
            atol=1e-4, rtol=1e-3)
    return len(cases)


