"""Checks of notebook 00's exercises: Eq. 9 (image score) and Eq. 10 (one layer's map)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tpslab.course.checks import exercise, expect, seeds
from tpslab.methods.tps.model import image_logits, patch_logits

T = 0.07


def _features(seed: int, b: int = 3, n: int = 16, d: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, d, generator=g) * 3, torch.randn(b, n, d, generator=g) * 2,
            torch.randn(2, d, generator=g))  # (B, D) image, (B, L, D) patches, (2, D) text


@exercise("e0.1", "Eq. 9: the image score")
def image_score(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(embedding (B, D), global_text (2, D), temperature) -> (B,)`` probability of "anomalous"."""
    for seed in seeds(hidden):
        v, _, t = _features(seed)
        want = image_logits(v, t, T).softmax(-1)[:, 1]
        expect(fn(v.clone(), t.clone(), T), want, {
            "normalise v and t to unit length first: Eq. 9 compares cosines, not raw dot products":
                lambda v=v, t=t: ((v @ t.T) / T).softmax(-1)[:, 1],
            "divide the cosines by the temperature before the softmax":
                lambda v=v, t=t: image_logits(v, t, 1.0).softmax(-1)[:, 1],
            "column 0 is 'normal', column 1 'anomalous': return the anomalous probability":
                lambda v=v, t=t: image_logits(v, t, T).softmax(-1)[:, 0],
        }, "expected softmax([cos(v, t_n), cos(v, t_a)] / temperature)[anomalous], one value per image")
    return len(seeds(hidden))


@exercise("e0.2", "Eq. 10: one layer's patch probabilities")
def layer_map(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(patches (B, L, D), text (2, D), temperature) -> (B, L)`` probability of "anomalous" per patch."""
    for seed in seeds(hidden):
        _, z, t = _features(seed)
        want = patch_logits(z, t, T).softmax(-1)[..., 1]
        expect(fn(z.clone(), t.clone(), T), want, {
            "the softmax runs over the two sentences (the last dimension), not over the patches":
                lambda z=z, t=t: patch_logits(z, t, T).softmax(1)[..., 1],
            "normalise the patch tokens and the text features to unit length first":
                lambda z=z, t=t: ((z @ t.T) / T).softmax(-1)[..., 1],
            "divide the cosines by the temperature before the softmax":
                lambda z=z, t=t: patch_logits(z, t, 1.0).softmax(-1)[..., 1],
        }, "expected softmax([cos(z_p, s_n), cos(z_p, s_a)] / temperature)[anomalous] for every patch p, (B, L)")
    return len(seeds(hidden))
