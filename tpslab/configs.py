"""The settings dataclasses of a model, a training run and an evaluation, in a module without torch.

``TPSConfig`` (what defines a TPS model, saved in every checkpoint), ``TrainConfig`` (the
training recipe) and ``EvalConfig`` (how a model is evaluated) live here rather than beside
the code that uses them (:mod:`tpslab.model`, :mod:`tpslab.train`, :mod:`tpslab.evaluate`,
which re-export them) so that the command line can show their defaults in ``--help``
without importing torch or open_clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpslab.utils import SettingsDict, TPSLabError, check_fields

AUPRO_METHODS = ("exact", "authors")  # "exact": every threshold; "authors": their 200 thresholds
VARIANTS = ("paper", "authors-code")


@dataclass
class TPSConfig(SettingsDict):
    """Everything that defines a TPS model (saved in every checkpoint)."""

    SECTION = "model"

    backbone: str = "tpslab-tiny"  # open_clip architecture, or "local-dir:PATH"
    pretrained: str | None = None  # None (seeded random), "openai", or a checkpoint file
    image_size: int | None = None  # input size; None = the architecture's (518 for the paper)
    layers: tuple[int, ...] | None = None  # 1-based vision blocks; None = 6/12/18/24 scaled
    variant: str = "paper"  # "paper" or "authors-code" (sets the four fields below when None)
    shared_pathway: bool | None = None  # one pathway for all layers (authors' code)
    pathway_at_inference: bool | None = None  # use the pathway when predicting (paper: yes)
    image_embedding: str | None = None  # "open_clip" or "authors" (class token @ proj, no ln_post)
    fp16_deep_prompts: bool | None = None  # cast deep prompts through fp16 (authors' code)
    train_text_projection: bool | None = None  # fine-tune CLIP's text projection (authors' code)
    prompts: str = "learned"  # "learned" (TPS) or "fixed" (ablation A1's words)
    pathway: bool = True  # False: no pathway at all (ablation A1)
    n_ctx: int = 12  # learnable context vectors per sentence
    deep_depth: int = 9  # deep prompts at text layers 2..depth (of 12; scaled)
    deep_length: int = 4  # deep prompt vectors per layer
    global_noun: str = "object"  # = prompts.GLOBAL_NOUN: "object" (object-agnostic) or a class name
    heads: int = 8  # pathway attention heads
    temperature: float = 0.07  # softmax temperature of the image and patch scores
    pos_resize: str = "bilinear"  # position-grid resize: "bilinear" (authors) or "open_clip"
    seed: int = 0  # seeds random CLIP weights and the learnable parameters

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise TPSLabError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        code = self.variant == "authors-code"
        defaults = dict(shared_pathway=code, pathway_at_inference=not code, fp16_deep_prompts=code,
                        train_text_projection=code, image_embedding="authors" if code else "open_clip")
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.prompts not in ("learned", "fixed"):
            raise TPSLabError(f"prompts must be 'learned' or 'fixed', got {self.prompts!r}")
        if self.layers is not None:
            self.layers = tuple(int(b) for b in self.layers)



NO_EFFECT_ON_RESULTS = ("device", "num_workers", "cache_features")  # TrainConfig fields a resumed run may change


@dataclass
class TrainConfig:
    """The training recipe (defaults: the paper's, from the spec)."""

    epochs: int = 15  # passes over the auxiliary data
    batch_size: int = 8  # images per step
    lr_prompts: float = 1e-3  # Adam lr of both prompt learners
    lr_pathway: float = 1e-4  # Adam lr of the pathway(s) (and text projection, authors' code)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas
    seed: int = 111  # shuffling seed
    cache_features: bool = False  # compute frozen CLIP features once, reuse every epoch
    num_workers: int = 0  # DataLoader workers (when not caching)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a profile's or a checkpoint's), rejecting unknown keys."""
        check_fields(cls, data, "training")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


@dataclass
class EvalConfig:
    """How a model is evaluated (a profile's ``evaluate:`` section)."""

    batch_size: int = 8  # images per forward pass
    sigma: float | None = None  # Gaussian smoothing of the maps in px; None = the method's reference protocol
    aupro_method: str = "exact"  # "exact" (every threshold) or "authors" (their 200 thresholds)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"

    def __post_init__(self) -> None:
        """Check the AUPRO method."""
        if self.aupro_method not in AUPRO_METHODS:
            raise TPSLabError(f"aupro_method must be one of {AUPRO_METHODS}, got {self.aupro_method!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Build from a dict (a profile's section), rejecting unknown keys."""
        check_fields(cls, data, "evaluate")
        return cls(**data)
