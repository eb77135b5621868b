"""CLIP, zero-shot: the plain baseline of the paper's Tables 1-2 (docs/baselines.md#section-1, #decision-8-1).

**No reference code exists** for this column: AnomalyCLIP's tables (which TPS reprints)
describe it in one appendix sentence, and its maintainer confirmed the setting (issue
zqhang/AnomalyCLIP#25): the same ViT-L/14@336 backbone, two single prompts, no change to the
vision side. What tpslab chose (docs/baselines.md#decision-8-1):

* two sentences per class, :data:`TEMPLATES`, the class word being the data set's class
  name with ``_`` -> space (``metal_nut`` -> ``a photo of a normal metal nut.``);
* image score = softmax over [normal, anomalous] of cos(v, t) / 0.07, with ``v`` open_clip's
  image embedding (ln_post + proj on the final class token), all vectors L2-normalised;
* map: the last block's patch tokens through ln_post + proj, the same softmax per patch,
  P(anomalous) bilinearly upsampled to the input size (:func:`tpslab.methods.tps.model.upsample_probs`);
* reference protocol: Gaussian sigma 4 at 518 px (AnomalyCLIP's test.py), scaled to the input.

On real weights expect a near-chance or even *inverted* pixel AUROC (AnomalyCLIP's table: 38.4
on MVTec AD): the last block's q-k patch tokens do not align with text, which is what DPAM
(AnomalyCLIP) and TPS set out to fix. That number is a sign of a faithful baseline, not a bug.
Without smoothing the temperature changes no AUROC or AP (a 2-way softmax is monotone in the
cosine gap); with sigma 4 it does, slightly.

>>> from tpslab.methods import build_method
>>> clip = build_method("clip", backbone="tpslab-tiny", pretrained=None, image_size=None)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tpslab.backbone.core import Backbone, load_clip
from tpslab.methods.base import SIGMA_AT_518, Detector, EvalProtocol, Prediction, check_class_names, scaled_sigma
from tpslab.methods.tps.model import anomaly_map, make_preprocess, upsample_probs
from tpslab.utils import SettingsDict

TEMPLATES = ("a photo of a normal {}.", "a photo of an anomalous {}.")  # (normal, anomalous)


def class_word(class_name: str) -> str:
    """The word a class is called by in the sentences: the folder name with ``_`` -> space.

    >>> class_word("metal_nut")
    'metal nut'
    """
    return class_name.replace("_", " ")


def sentences(class_name: str) -> list[str]:
    """The two sentences CLIP scores an image of ``class_name`` against, normal first.

    >>> sentences("metal_nut")
    ['a photo of a normal metal nut.', 'a photo of an anomalous metal nut.']
    """
    return [t.format(class_word(class_name)) for t in TEMPLATES]


@dataclass
class Settings(SettingsDict):
    """Everything that defines the CLIP baseline (saved with its results)."""

    SECTION = "clip"

    backbone: str = "ViT-L-14-336"  # open_clip architecture, or "local-dir:PATH"
    pretrained: str | None = "openai"  # None (seeded random), a tag, or a checkpoint file
    image_size: int | None = 518  # input size; None = the architecture's own
    pos_resize: str = "bilinear"  # position-grid resize: "bilinear" (as AnomalyCLIP) or "open_clip"
    quick_gelu: bool | None = None  # None: on for the "openai" tag
    temperature: float = 0.07  # softmax temperature of the scores
    sigma: float = SIGMA_AT_518  # reference smoothing sigma at 518 px, scaled to image_size
    seed: int = 0  # seeds random CLIP weights


class CLIPDetector(Detector):
    """Zero-shot CLIP with two sentences per class (see the module docstring).

    Args:
        settings: the baseline's settings.
        backbone: a prebuilt backbone (else built from ``settings``); its last block is used.
    """

    method = "clip"
    trains = False

    def __init__(self, settings: Settings, backbone: Backbone | None = None):
        super().__init__()
        self.settings = settings
        if backbone is None:
            clip = load_clip(settings.backbone, settings.pretrained, settings.image_size,
                             pos_resize=settings.pos_resize, quick_gelu=settings.quick_gelu, seed=settings.seed)
            backbone = Backbone(clip, settings.backbone, layers=(len(clip.visual.transformer.resblocks),))
        else:
            backbone = Backbone(backbone.clip, backbone.name, layers=(backbone.num_blocks,))
        self.backbone = backbone
        self.preprocess = make_preprocess(backbone)
        self._text: dict[str, torch.Tensor] = {}  # class name -> (2, D) normalised text features

    @property
    def protocol(self) -> EvalProtocol:
        """Sigma 4 at 518 px (scaled), as AnomalyCLIP's pipeline smooths every map."""
        return EvalProtocol(self.image_size, scaled_sigma(self.settings.sigma, self.image_size),
                            "AnomalyCLIP test.py (sigma 4 at 518); docs/baselines.md#decision-8-1")

    def text_features(self, class_name: str) -> torch.Tensor:
        """(2, D) L2-normalised features of :func:`sentences`, row 0 normal (cached per class)."""
        if class_name not in self._text:
            self._text[class_name] = F.normalize(self.backbone.encode_sentences(sentences(class_name)).float(), dim=-1)
        return self._text[class_name]

    def scores(self, images: torch.Tensor, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits before the softmax: image (B, 2) and patches (B, L, 2), [normal, anomalous] / temperature."""
        feats = self.backbone.encode_image(images, "open_clip")  # embedding (B, D), patches [(B, L, D)]
        text = torch.stack([self.text_features(c) for c in class_names]).to(feats.embedding.device)  # (B, 2, D)
        t = self.settings.temperature
        v = F.normalize(feats.embedding, dim=-1).unsqueeze(1)  # (B, 1, D)
        image_logits = (v @ text.transpose(1, 2)).squeeze(1) / t  # (B, 2)
        z = F.normalize(feats.patches[0], dim=-1)  # (B, L, D): last block, ln_post + proj
        patch_logits = z @ text.transpose(1, 2) / t  # (B, L, 2)
        return image_logits, patch_logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_names: list[str] | None = None) -> Prediction:
        """Image scores P(anomalous) in [0, 1] and unsmoothed maps (B, S, S) in [0, 1].

        Args:
            images: (B, 3, S, S), preprocessed with ``self.preprocess``.
            class_names: the class of each image (its folder name; ``_`` becomes a space).
        """
        names = check_class_names(class_names, len(images), self.method)
        image_logits, patch_logits = self.scores(images, names)
        probs = upsample_probs(patch_logits, images.shape[-1])  # (B, 2, S, S)
        return Prediction(image_logits.softmax(-1)[:, 1], anomaly_map([probs]))


def build(settings: Settings) -> CLIPDetector:
    """The registry's entry point (see :func:`tpslab.methods.build_method`)."""
    return CLIPDetector(settings)
