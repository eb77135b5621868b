"""Text prompts of TPS: every sentence the model is given, and the learners that tune them.

Two prompt learners, each with its own parameters and each giving one *normal* and one
*anomalous* text feature:

* the **global** prompts describe the whole image (image-level classification, Eq. 2);
* the **shunt** prompts describe a part of it (pixel-level segmentation, Eq. 3).

In the learned form (TPS, A2) the ``X`` placeholders are replaced by 12 learnable
context vectors, separate for the normal and the anomalous sentence, and 4 learnable
"deep prompt" vectors replace sequence positions 1..4 at the input of text layers
2..9 (AnomalyCLIP's object-agnostic prompt learning). In the fixed form (ablation A1)
the sentences are plain words.
"""

from __future__ import annotations

import torch
from torch import nn

from tpslab.backbone.core import Backbone

# (normal, anomalous) states; "{}" is the noun ("object" / "part", or a class name).
GLOBAL_STATES = ("{} with all parts flawless", "{} with damaged parts")
SHUNT_STATES = ("the flawless {}", "the damaged {}")
GLOBAL_NOUN = "object"  # object-agnostic (AnomalyCLIP); a class name may replace it
SHUNT_NOUN = "part"

# Ablation A1 of the paper: fixed words instead of learnable context.
FIXED_GLOBAL = ("a photo of a normal {} with all parts flawless", "a photo of a anomalous {} with damaged parts")
FIXED_SHUNT = ("a photo of the flawless part", "a photo of the damaged part")

PLACEHOLDER = "X"


def learned_sentences(states: tuple[str, str], noun: str, n_ctx: int) -> list[str]:
    """The two sentences of a learned prompt, ``X`` marking the learnable positions.

    >>> learned_sentences(SHUNT_STATES, "part", 3)
    ['X X X the flawless part.', 'X X X the damaged part.']
    """
    prefix = " ".join([PLACEHOLDER] * n_ctx)
    return [f"{prefix} {state.format(noun)}." for state in states]


def fixed_sentences(templates: tuple[str, str], noun: str) -> list[str]:
    """The two sentences of a fixed-word prompt (ablation A1)."""
    return [f"{t.format(noun)}." for t in templates]


def deep_prompt_layers(num_text_layers: int, depth: int = 9) -> int:
    """How many text layers get deep prompts: ``depth - 1`` of 12, scaled to the encoder.

    >>> deep_prompt_layers(12), deep_prompt_layers(4)
    (8, 3)
    """
    return max(0, min(num_text_layers - 1, round((depth - 1) * num_text_layers / 12)))


class PromptLearner(nn.Module):
    """One prompt learner: a (normal, anomalous) pair of sentences with learnable parts.

    Args:
        backbone: the frozen CLIP (tokenizer, word embeddings, width).
        sentences: the two sentences (normal first); ``X`` words are learnable positions.
        n_ctx: number of learnable context vectors per sentence (0 for fixed words).
        deep_layers: number of text layers (from layer 2 on) that get deep prompts.
        deep_length: number of deep prompt vectors per layer.
        fp16_deep_prompts: cast deep prompts through float16 before use, as the
            authors' code does (their CLIP runs in half precision).
        unused_projections: also create the authors' dead ``Linear(W, 896)`` layers,
            only so that their checkpoints have somewhere to go.
    """

    def __init__(
        self,
        backbone: Backbone,
        sentences: list[str],
        n_ctx: int = 12,
        deep_layers: int = 8,
        deep_length: int = 4,
        fp16_deep_prompts: bool = False,
        unused_projections: bool = False,
    ):
        super().__init__()
        width = backbone.text_width
        self.sentences = list(sentences)
        self.n_ctx = n_ctx
        self.fp16_deep_prompts = fp16_deep_prompts
        tokens = backbone.tokenize(self.sentences)  # (2, T)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("word_embeddings", backbone.embed_tokens(tokens).float(), persistent=False)  # (2, T, W)
        self.ctx = nn.Parameter(torch.randn(2, n_ctx, width) * 0.02) if n_ctx else None  # (normal/anomalous, n, W)
        self.deep = nn.ParameterList([nn.Parameter(torch.randn(deep_length, width) * 0.02) for _ in range(deep_layers)])
        if unused_projections:
            self.unused_projections = nn.ModuleList([nn.Linear(width, 896) for _ in range(deep_layers)])
            self.unused_projections.requires_grad_(False)

    def embeddings(self) -> torch.Tensor:
        """Word embeddings (2, T, W) with the learnable context at positions 1..n_ctx."""
        x = self.word_embeddings
        if self.ctx is None:
            return x
        return torch.cat([x[:, :1], self.ctx, x[:, 1 + self.n_ctx:]], dim=1)

    def deep_prompts(self) -> list[torch.Tensor]:
        """The deep prompt vectors of every layer: (n, W) each, or (S, n, W) when cast through fp16.

        The authors' code (TPS and AnomalyCLIP alike) expands the shared vectors over the S
        sentences *then* casts each copy to fp16; casting once before the expand gives the same
        forward values but rounds the summed gradient instead of each sentence's, so the copies
        are made here first, as theirs are.
        """
        if self.fp16_deep_prompts:
            s = self.tokens.shape[0]
            return [p.unsqueeze(0).expand(s, -1, -1).half().float() for p in self.deep]  # (S, n, W)
        return list(self.deep)

    def forward(self, backbone: Backbone, projection: torch.Tensor | None = None) -> torch.Tensor:
        """(2, D) text features, row 0 normal, row 1 anomalous (not normalised)."""
        return backbone.encode_text(self.embeddings(), self.tokens, self.deep_prompts(), projection)
