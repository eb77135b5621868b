"""The TPS model: frozen CLIP + global/shunt prompt learners + pathway modules.

The scores, for an image with embedding ``v`` and patch tokens ``z_i`` of each selected
layer ``i`` (all vectors L2-normalised), each computed by one function of this module::

    C   = softmax([<v, t_g^n>, <v, t_g^a>] / 0.07)        image_logits: image score = C[anomalous]
    S_i = softmax([<z_p, s_i^n>, <z_p, s_i^a>] / 0.07)     patch_logits, s_i = pathway_i(t_s, t_g, z_i)
    map = sum_i (S_i[a] + 1 - S_i[n]) / 2                  upsample_probs + anomaly_map

With a two-way softmax ``S_i[n] = 1 - S_i[a]``, so each term of the map equals
``S_i[a]``; the paper's formula is kept for fidelity.

Two variants, chosen by ``TPSConfig.variant``:

* ``"paper"``: one pathway per layer, used in training and at inference; the image
  embedding is open_clip's; CLIP is frozen.
* ``"authors-code"``: what the released code does: one pathway shared by all layers and
  discarded at inference (maps from the plain shunt features), the image embedding
  without ``ln_post``, deep prompts cast through fp16, and CLIP's ``text_projection``
  fine-tuned with the pathway.

Each behaviour is also a field of its own, so ablations can mix them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tpslab.backbone.core import Backbone, ImageFeatures, build_backbone
from tpslab.configs import VARIANTS, TPSConfig  # noqa: F401 - re-exported: tpslab.methods.tps.model.TPSConfig
from tpslab.data.dataset import image_transform
from tpslab.data.images import load_image
from tpslab.methods.base import (
    SIGMA_AT_518,
    Detector,
    EvalProtocol,
    Prediction,
    evaluating,
    learnable_seed,
    scaled_sigma,
)
from tpslab.methods.tps.pathway import Pathway
from tpslab.methods.tps.prompts import (
    FIXED_GLOBAL,
    FIXED_SHUNT,
    GLOBAL_STATES,
    SHUNT_NOUN,
    SHUNT_STATES,
    PromptLearner,
    deep_prompt_layers,
    fixed_sentences,
    learned_sentences,
)


@dataclass
class TPSOutput:
    """Raw outputs for a batch (everything the loss needs), before softmax.

    Attributes:
        image_logits: (B, 2) cosine similarities / temperature, [normal, anomalous].
        patch_logits: one (B, L, 2) tensor per layer, with the shunt features the model uses.
        attention: with ``return_attention``, one (B, 2, L) tensor per layer (empty without a pathway).
        plain_logits: with ``return_readouts``, per layer (B, L, 2) against the plain shunt features.
        global_logits: with ``return_readouts``, per layer (B, L, 2) against the global features.
        shunt_features: with ``return_readouts``, per layer (B, 2, D) the shunt features behind ``patch_logits``.
    """

    image_logits: torch.Tensor
    patch_logits: list[torch.Tensor]
    attention: list[torch.Tensor] | None = None
    plain_logits: list[torch.Tensor] | None = None
    global_logits: list[torch.Tensor] | None = None
    shunt_features: list[torch.Tensor] | None = None


def image_logits(embedding: torch.Tensor, global_text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Paper Eq. 9 before the softmax: image embeddings against the global text features.

    ``C = softmax([<v, t_g^n>, <v, t_g^a>] / temperature)``, image score ``C[anomalous]``.

    Args:
        embedding: (B, D) image embeddings ``v``.
        global_text: (2, D) global text features, [normal, anomalous].
        temperature: 0.07 in the paper.

    Returns:
        (B, 2) logits.
    """
    v = F.normalize(embedding, dim=-1)  # (B, D)
    return v @ F.normalize(global_text, dim=-1).T / temperature  # (B, 2)


def patch_logits(patches: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Paper Eq. 10 before the softmax: every patch against a pair of text features.

    ``S_i = softmax([<z_p, s^n>, <z_p, s^a>] / temperature)`` per patch ``p``, so
    ``patch_logits(...).softmax(-1)[..., 1]`` is the patch's probability of "anomalous".

    Args:
        patches: (B, L, D) patch tokens ``z_i`` of one layer.
        text: (2, D) or (B, 2, D) text features, [normal, anomalous] (per image after the pathway).
        temperature: 0.07 in the paper.

    Returns:
        (B, L, 2) logits.
    """
    return F.normalize(patches, dim=-1) @ F.normalize(text, dim=-1).transpose(-1, -2) / temperature


def upsample_probs(logits: torch.Tensor, size: int) -> torch.Tensor:
    """(B, L, 2) patch logits -> (B, 2, size, size) probabilities ``S_i`` (softmax, then bilinear)."""
    b, n, _ = logits.shape
    g = int(round(n**0.5))
    probs = logits.softmax(dim=-1).transpose(1, 2).reshape(b, 2, g, g)  # (B, 2, g, g)
    return F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)


def anomaly_map(layer_probs: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of (S_a + 1 - S_n) / 2; each entry (B, 2, H, W) -> (B, H, W)."""
    return sum((p[:, 1] + 1 - p[:, 0]) / 2 for p in layer_probs)


def output_to_prediction(out: TPSOutput, size: int, return_layers: bool = False) -> Prediction:
    """Logits -> what ``predict`` returns: image scores ``C[anomalous]`` and the map at ``size`` x ``size``.

    Shared by TPS and AnomalyCLIP (same scores, different features and prompts).
    """
    probs = [upsample_probs(p, size) for p in out.patch_logits]  # (B, 2, S, S) each
    extras = {"layer_probs": probs} if return_layers else {}
    return Prediction(out.image_logits.softmax(-1)[:, 1], anomaly_map(probs), extras)


class TPS(Detector):
    """Text Prompt Shunt on a frozen CLIP (one of the methods of :mod:`tpslab.methods`).

    Args:
        config: the model's settings.
        backbone: a prebuilt backbone (else built from ``config``).
    """

    method = "tps"
    trains = True
    layer_weight = 1.0  # weight of each layer's segmentation terms in the loss (tps_loss; TPS: 1)

    def __init__(self, config: TPSConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = self.settings = config
        torch.manual_seed(config.seed)
        self.backbone = backbone or build_backbone(config.backbone, config.pretrained, config.image_size,
                                                   config.layers, config.pos_resize, config.seed)
        torch.manual_seed(learnable_seed(config))  # learnable parts: same init whatever CLIP's size
        bb = self.backbone
        deep = deep_prompt_layers(bb.num_text_layers, config.deep_depth)
        code = config.variant == "authors-code"
        if config.prompts == "learned":
            global_s = learned_sentences(GLOBAL_STATES, config.global_noun, config.n_ctx)
            shunt_s = learned_sentences(SHUNT_STATES, SHUNT_NOUN, config.n_ctx)
            n_ctx = config.n_ctx
        else:
            global_s = fixed_sentences(FIXED_GLOBAL, config.global_noun)
            shunt_s = fixed_sentences(FIXED_SHUNT, SHUNT_NOUN)
            n_ctx = 0
        kw = dict(n_ctx=n_ctx, deep_layers=deep, deep_length=config.deep_length,
                  fp16_deep_prompts=config.fp16_deep_prompts, unused_projections=code)
        self.global_prompts = PromptLearner(bb, global_s, **kw)
        self.shunt_prompts = PromptLearner(bb, shunt_s, **kw)
        n_pathways = 0 if not config.pathway else 1 if config.shared_pathway else len(bb.layers)
        self.pathways = nn.ModuleList([Pathway(bb.embed_dim, config.heads) for _ in range(n_pathways)])
        self.text_projection = nn.Parameter(bb.clip.text_projection.detach().clone(),
                                            requires_grad=bool(config.train_text_projection))
        self.preprocess = make_preprocess(bb)

    # -- the Detector surface ------------------------------------------------------
    @property
    def protocol(self) -> EvalProtocol:
        """Sigma 4 at 518 px (scaled to the input size), as the authors' test code."""
        return EvalProtocol(self.image_size, scaled_sigma(SIGMA_AT_518, self.image_size),
                            "TPS authors' test code (sigma 4 at 518)")

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: the prompt learners, and the pathway side."""
        prompts = [p for m in (self.global_prompts, self.shunt_prompts) for p in m.parameters() if p.requires_grad]
        pathway = [p for p in self.pathways.parameters() if p.requires_grad]
        if self.text_projection.requires_grad:  # the authors' pathway owns the text projection
            pathway.append(self.text_projection)
        return {"prompts": prompts, "pathway": pathway}

    # -- pieces --------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> ImageFeatures:
        """Frozen CLIP features of preprocessed images (cacheable across epochs)."""
        return self.backbone.encode_image(images, self.config.image_embedding)

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(global, shunt) text features, each (2, D): row 0 normal, row 1 anomalous.

        One pass of the text encoder over the four sentences (the two learners' deep prompts
        given per sentence), once per forward: the prompts change at every optimiser step.
        """
        g, s = self.global_prompts, self.shunt_prompts
        deep_g, deep_s = g.deep_prompts(), s.deep_prompts()
        if len(deep_g) != len(deep_s) or any(a.shape[-2:] != b.shape[-2:] for a, b in zip(deep_g, deep_s)):
            return g(self.backbone, self.text_projection), s(self.backbone, self.text_projection)

        def per_sentence(p: torch.Tensor) -> torch.Tensor:  # (n, W) or (2, n, W) -> (2, n, W)
            return p if p.ndim == 3 else p.unsqueeze(0).expand(2, -1, -1)

        deep = [torch.cat([per_sentence(a), per_sentence(b)]) for a, b in zip(deep_g, deep_s)]  # (4, n, W) each
        text = self.backbone.encode_text(torch.cat([g.embeddings(), s.embeddings()]), torch.cat([g.tokens, s.tokens]),
                                         deep, self.text_projection)  # (4, D)
        return text[:2], text[2:]

    def pathway_for(self, layer: int) -> Pathway | None:
        """The pathway of the ``layer``-th selected layer (0-based): its own, or the shared one; None without."""
        if not self.pathways:
            return None
        return self.pathways[0 if self.config.shared_pathway else layer]

    def use_pathway(self) -> bool:
        """Whether the shunt features are customised now (training, or at inference if configured)."""
        return bool(self.pathways) and (self.training or self.config.pathway_at_inference)

    # -- forward -------------------------------------------------------------------
    def forward_features(self, feats: ImageFeatures, return_attention: bool = False, return_readouts: bool = False,
                         use_pathway: bool | None = None) -> TPSOutput:
        """Image and patch logits from (cached) image features, before softmax.

        Args:
            feats: the frozen CLIP features of a batch.
            return_attention: also return MHA_eta's attention per layer (computed even where the
                pathway's output is not used, as the authors' code does at inference).
            return_readouts: also return, per layer, the patch logits against the plain shunt and
                the global features, and the shunt features behind ``patch_logits``.
            use_pathway: customise the shunt features with the pathway (default: :meth:`use_pathway`).

        Returns:
            The logits (and what was asked for) as a :class:`TPSOutput`.
        """
        t = self.config.temperature
        global_t, shunt_t = self.text_features()  # (2, D) each
        b = feats.embedding.shape[0]
        pathway = self.use_pathway() if use_pathway is None else use_pathway and bool(self.pathways)
        out = TPSOutput(image_logits(feats.embedding, global_t, t), [], [] if return_attention else None,
                        *([], [], []) if return_readouts else (None, None, None))
        for i, z in enumerate(feats.patches):  # z: (B, L, D)
            plain = shunt_t.expand(b, -1, -1)  # (B, 2, D); one per layer: the gradients add up in a fixed order
            s = plain
            if self.pathways and (pathway or return_attention):
                custom = self.pathway_for(i)(plain, global_t.expand(b, -1, -1), z, return_attention=return_attention)
                custom, att = custom if return_attention else (custom, None)
                if return_attention:
                    out.attention.append(att)
                if pathway:
                    s = custom  # (B, 2, D)
            out.patch_logits.append(patch_logits(z, s, t))  # (B, L, 2)
            if return_readouts:
                out.plain_logits.append(patch_logits(z, plain, t))
                out.global_logits.append(patch_logits(z, global_t, t))
                out.shunt_features.append(s)
        return out

    def forward(self, images: torch.Tensor) -> TPSOutput:
        """Logits for preprocessed images (B, 3, S, S)."""
        return self.forward_features(self.encode_images(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_names: list[str] | None = None,
                return_layers: bool = False) -> Prediction:
        """Image scores in [0, 1] and unsmoothed anomaly maps (B, S, S) for preprocessed images (B, 3, S, S).

        Args:
            images: (B, 3, S, S), preprocessed with ``self.preprocess``.
            class_names: ignored (TPS's prompts are object-agnostic).
            return_layers: also return each layer's probabilities in ``extras["layer_probs"]``.
        """
        with evaluating(self):
            out = self.forward_features(self.encode_images(images))
        return output_to_prediction(out, images.shape[-1], return_layers)


def make_preprocess(backbone: Backbone):
    """PIL image -> (3, S, S) tensor: bicubic resize to S x S (no aspect kept), OpenAI mean/std."""
    mean, std = backbone.mean_std
    return image_transform(backbone.image_size, mean, std)


def build_model(
    backbone: str = "tpslab-tiny",
    pretrained: str | None = None,
    image_size: int | None = None,
    variant: str = "paper",
    seed: int = 0,
    **settings: Any,
) -> TPS:
    """Build a TPS model.

    >>> model = build_model("tpslab-tiny", seed=0)           # tiny, random CLIP, CPU  # doctest: +SKIP
    >>> model = build_model("ViT-L-14-336", "openai", 518)   # the paper's  # doctest: +SKIP

    Args:
        backbone: open_clip architecture name (or ``local-dir:PATH``).
        pretrained: ``None``, ``"openai"`` or a checkpoint file.
        image_size: input size (518 for the paper).
        variant: ``"paper"`` or ``"authors-code"``.
        seed: seed for random weights and learnable parameters.
        **settings: any other :class:`TPSConfig` field.
    """
    cfg = TPSConfig.from_dict(dict(backbone=backbone, pretrained=pretrained, image_size=image_size,
                                   variant=variant, seed=seed, **settings))
    return TPS(cfg)


def load_image_tensor(model: TPS, path: str) -> torch.Tensor:
    """Read an image file and preprocess it for ``model`` (3, S, S)."""
    img: Image.Image = load_image(path)
    return model.preprocess(img)
