"""AnomalyCLIP (Zhou et al., ICLR 2024): object-agnostic prompts + DPAM (docs/baselines.md#section-3, #decision-8-3).

AnomalyCLIP is TPS without shunt prompts and pathway, plus DPAM; it shares TPS's parts:

* **prompts** (:class:`tpslab.methods.tps.prompts.PromptLearner`): one learner with the two sentences
  ``X1..X12 object.`` / ``X1..X12 damaged object.`` (:data:`STATES`), 12 learnable context
  vectors per sentence, deep text prompts at text layers 2..9 (4 vectors each, cast through
  fp16 as the reference) and the reference's unused ``Linear(W, 896)`` layers (checkpoints only);
* **DPAM**: patch tokens of the V-V attention stream that runs beside CLIP from block 6 on
  (:meth:`tpslab.backbone.core.Backbone.encode_image_vv`); the image embedding is the final class
  token @ proj *without* ln_post, as the reference computes it;
* **scores** as TPS's image and patch scores (:mod:`tpslab.methods.tps.model` ``image_logits``, ``patch_logits``),
  with the same learned features for image and patches::

      C = softmax([<v, t^n>, <v, t^a>] / 0.07),   S_i = softmax([<z_p, t^n>, <z_p, t^a>] / 0.07)

  map = sum over the used blocks of ``(S_i[a] + 1 - S_i[n]) / 2`` (:func:`tpslab.methods.tps.model.anomaly_map`);
* **loss and training**: the same focal + Dice + CE losses and the same loop as TPS. The model
  exposes TPS's training surface (``encode_images``, ``forward_features`` -> ``TPSOutput``,
  ``trainable_state_dict``, ``config.to_dict()``) and one extra number, ``config.layer_weight``
  (the reference's ``lam = 4``): the segmentation term of each layer is multiplied by it.

**Which blocks.** The paper says 6/12/18/24, but until the reference's commit 2a7c886 its four
"layers" were the same tensor, the block-24 V-V tokens (no ``.clone()`` on a stream updated in
place); the maintainers then switched to ``--features_list 24`` with ``lam = 4``, which is the same
computation (issues #18, #64, #82: "all results were run with 24"). The default here is that:
``layers=None`` = the last block, ``layer_weight=4``. ``layers=(6, 12, 18, 24)`` (on a 24-block
model; with ``layer_weight=1``) is what the paper's text describes and was **never published**.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tpslab.backbone.core import Backbone, ImageFeatures, load_clip
from tpslab.methods.base import (
    SIGMA_AT_518,
    Detector,
    EvalProtocol,
    Prediction,
    evaluating,
    learnable_seed,
    scaled_sigma,
)
from tpslab.methods.tps.model import TPSOutput, image_logits, make_preprocess, output_to_prediction, patch_logits
from tpslab.methods.tps.prompts import PromptLearner, deep_prompt_layers, learned_sentences
from tpslab.utils import SettingsDict, TPSLabError

STATES = ("{}", "damaged {}")  # (normal, anomalous); "{}" is the object-agnostic noun
NOUN = "object"


@dataclass
class AnomalyCLIPConfig(SettingsDict):
    """Everything that defines an AnomalyCLIP model (saved in every checkpoint)."""

    SECTION = "anomalyclip"

    backbone: str = "ViT-L-14-336"  # open_clip architecture, or "local-dir:PATH"
    pretrained: str | None = "openai"  # None (seeded random), a tag, or a checkpoint file
    image_size: int | None = 518  # input size; None = the architecture's own
    layers: tuple[int, ...] | None = None  # 1-based blocks of V-V tokens; None: the last (published)
    layer_weight: float = 4.0  # lambda: weight of each layer's focal + Dice terms (reference lam = 4)
    dpam_start: int | None = None  # first block of the V-V stream; None: 6 of 24, scaled
    image_embedding: str = "authors"  # "authors" (class token @ proj, no ln_post) or "open_clip"
    n_ctx: int = 12  # learnable context vectors per sentence
    deep_depth: int = 9  # deep prompts at text layers 2..depth (of 12; scaled)
    deep_length: int = 4  # deep prompt vectors per layer
    fp16_deep_prompts: bool = True  # cast deep prompts through fp16 (reference: .half())
    noun: str = NOUN  # the object-agnostic word (a class name may replace it)
    temperature: float = 0.07  # softmax temperature of the scores
    sigma: float = SIGMA_AT_518  # reference smoothing sigma at 518 px, scaled to image_size
    pos_resize: str = "bilinear"  # position-grid resize: "bilinear" (reference) or "open_clip"
    quick_gelu: bool | None = None  # None: on for the "openai" tag
    seed: int = 0  # seeds random CLIP weights and the learnable prompts
    init_seed: int | None = None  # seeds the learnable prompts alone; None: seed + 1 (replicates vary it)

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.layers = tuple(int(b) for b in self.layers)
        if self.image_embedding not in ("authors", "open_clip"):
            raise TPSLabError(f"image_embedding must be 'authors' or 'open_clip', got {self.image_embedding!r}")


Settings = AnomalyCLIPConfig  # the registry's name for a method's settings


class AnomalyCLIP(Detector):
    """AnomalyCLIP on a frozen CLIP: one learned prompt pair, DPAM patch tokens.

    Args:
        config: the model's settings.
        backbone: a prebuilt backbone (else built from ``config``); ``config.layers`` applies.
    """

    method = "anomalyclip"
    trains = True

    def __init__(self, config: AnomalyCLIPConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = self.settings = config
        if backbone is None:
            clip = load_clip(config.backbone, config.pretrained, config.image_size, pos_resize=config.pos_resize,
                             quick_gelu=config.quick_gelu, seed=config.seed)
            name = config.backbone
        else:
            clip, name = backbone.clip, backbone.name
        n_blocks = len(clip.visual.transformer.resblocks)
        self.backbone = Backbone(clip, name, layers=config.layers or (n_blocks,))
        bb = self.backbone
        torch.manual_seed(learnable_seed(config))  # learnable parts: same init whatever CLIP's size
        self.prompts = PromptLearner(
            bb, learned_sentences(STATES, config.noun, config.n_ctx), n_ctx=config.n_ctx,
            deep_layers=deep_prompt_layers(bb.num_text_layers, config.deep_depth), deep_length=config.deep_length,
            fp16_deep_prompts=config.fp16_deep_prompts, unused_projections=True)
        self.preprocess = make_preprocess(bb)

    # -- the Detector surface ------------------------------------------------------
    @property
    def protocol(self) -> EvalProtocol:
        """Sigma 4 at 518 px (scaled), as the reference's test.py."""
        return EvalProtocol(self.image_size, scaled_sigma(self.config.sigma, self.image_size),
                            "AnomalyCLIP test.py (sigma 4 at 518)")

    @property
    def layer_weight(self) -> float:
        """Weight of each layer's segmentation terms in the loss (lambda; the reference's ``lam``)."""
        return self.config.layer_weight

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: all prompts (the reference's single Adam group)."""
        return {"prompts": [p for p in self.prompts.parameters() if p.requires_grad], "pathway": []}

    # -- forward -------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> ImageFeatures:
        """Frozen DPAM features of preprocessed images (cacheable across epochs).

        Returns:
            ImageFeatures: embedding (B, D) and one (B, L, D) V-V patch tensor per used block.
        """
        return self.backbone.encode_image_vv(images, self.config.dpam_start, self.backbone.layers,
                                             self.config.image_embedding)

    def text_features(self) -> torch.Tensor:
        """(2, D) text features of the learned prompts, row 0 normal, row 1 anomalous (not normalised)."""
        return self.prompts(self.backbone)

    def forward_features(self, feats: ImageFeatures) -> TPSOutput:
        """Logits from (cached) image features, before the softmax, with TPS's image and patch scores.

        Returns:
            TPSOutput: image_logits (B, 2) and one (B, L, 2) patch-logit tensor per used block.
        """
        t = self.config.temperature
        text = self.text_features()  # (2, D)
        return TPSOutput(image_logits(feats.embedding, text, t), [patch_logits(z, text, t) for z in feats.patches])

    def forward(self, images: torch.Tensor) -> TPSOutput:
        """Logits of preprocessed images (B, 3, S, S)."""
        return self.forward_features(self.encode_images(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_names: list[str] | None = None) -> Prediction:
        """Image scores P(anomalous) in [0, 1] and unsmoothed maps (B, S, S) in [0, number of layers].

        Args:
            images: (B, 3, S, S), preprocessed with ``self.preprocess``.
            class_names: ignored (the prompts are object-agnostic).
        """
        with evaluating(self):
            out = self.forward_features(self.encode_images(images))
        return output_to_prediction(out, images.shape[-1])


def build(settings: AnomalyCLIPConfig) -> AnomalyCLIP:
    """The registry's entry point (see :func:`tpslab.methods.build_method`)."""
    return AnomalyCLIP(settings)


@torch.no_grad()
def attention_weights(backbone: Backbone, images: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """CLIP's q-k attention and DPAM's V-V attention of one block, averaged over heads (for figures).

    Both are computed from the same input, ``ln_1`` of the q-k stream entering ``block``:
    ``softmax(q k^T / sqrt(d_head))`` is what CLIP uses; ``softmax(v v^T / sqrt(d_head))`` is what
    DPAM uses (:meth:`tpslab.backbone.core.Backbone.encode_image_vv`). V-V attention keeps each token
    close to tokens with similar values, so patch tokens stay local instead of drifting to a few
    global "sink" tokens, which is why AnomalyCLIP's maps localise better than CLIP's.

    Args:
        backbone: the frozen CLIP.
        images: (B, 3, S, S), preprocessed.
        block: 1-based vision block.

    Returns:
        ``{"qk": (B, 1+L, 1+L), "vv": (B, 1+L, 1+L)}``: row i = where token i attends (token 0 is CLS).
    """
    if not 1 <= block <= backbone.num_blocks:
        raise TPSLabError(f"block {block} out of range for {backbone.name} ({backbone.num_blocks} blocks)")
    resblocks = backbone.clip.visual.transformer.resblocks
    h = backbone.tokens(images)  # (B, 1+L, W)
    for b in resblocks[:block - 1]:
        h = b(h)
    attn = resblocks[block - 1].attn
    q, k, v = F.linear(resblocks[block - 1].ln_1(h), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = lambda x: x.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)  # noqa: E731  (B, heads, 1+L, d)
    q, k, v = split(q), split(k), split(v)
    scale = q.shape[-1] ** -0.5
    return {"qk": (q @ k.transpose(-1, -2) * scale).softmax(-1).mean(1),  # (B, 1+L, 1+L)
            "vv": (v @ v.transpose(-1, -2) * scale).softmax(-1).mean(1)}
