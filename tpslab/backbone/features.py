"""What the frozen image encoder gives a method (:class:`ImageFeatures`), and batches encoded in groups on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# At most this many tokens (images x (1 + L)) per vision forward on the CPU: the images of a larger
# batch go through in groups. Measured on a 2-core Xeon (benchmarks/bench_forward.py): a 24-block
# ViT at 518 px (1370 tokens an image) runs 1.3-2x slower per image at batch 8 than at batch 2,
# its activations no longer fitting the caches; ViT-B-16 at 224 px is flat from 8 to 32 images.
CPU_TOKENS_PER_CALL = 3072


@dataclass
class ImageFeatures:
    """What the frozen image encoder gives TPS for a batch.

    Attributes:
        embedding: (B, D) image embedding in the joint space (not normalised).
        patches: one (B, L, D) tensor per selected block, patch tokens in the joint space.
    """

    embedding: torch.Tensor
    patches: list[torch.Tensor]

    def to(self, device: torch.device | str) -> ImageFeatures:
        """The same features on ``device``."""
        return ImageFeatures(self.embedding.to(device), [p.to(device) for p in self.patches])

    def index(self, idx: torch.Tensor | slice) -> ImageFeatures:
        """The features of the images ``idx`` selects."""
        return ImageFeatures(self.embedding[idx], [p[idx] for p in self.patches])

    @staticmethod
    def cat(parts: list[ImageFeatures]) -> ImageFeatures:
        """The features of several batches, one after the other."""
        return ImageFeatures(torch.cat([f.embedding for f in parts]),
                             [torch.cat(p) for p in zip(*(f.patches for f in parts), strict=True)])


def encode_in_groups(images: torch.Tensor, tokens_per_image: int,
                     encode: Callable[[torch.Tensor], ImageFeatures]) -> ImageFeatures:
    """``encode(images)``; on the CPU in groups of at most :data:`CPU_TOKENS_PER_CALL` tokens.

    Each image's features are its own (the transformer never mixes images), so grouping changes
    only the speed, and the last bits of float sums.
    """
    per_call = max(1, CPU_TOKENS_PER_CALL // tokens_per_image)
    if images.device.type != "cpu" or images.shape[0] <= per_call:
        return encode(images)
    return ImageFeatures.cat([encode(group) for group in images.split(per_call)])
