"""What every detector in tpslab offers: the interface that evaluation, prediction and the CLI use.

A detector turns preprocessed images into image scores and anomaly maps. The five methods of
the paper's Tables 1-2 (TPS, CLIP, WinCLIP, AnomalyCLIP, MuSc) differ in how they get there,
in their input size and in how their reference code evaluates them; they share this surface:

* ``settings``: a typed dataclass (unknown keys rejected), saved in checkpoints and stored predictions;
* ``image_size`` and ``preprocess`` (PIL image -> (3, S, S) tensor);
* ``protocol``: the reference evaluation protocol (input size, Gaussian sigma of the maps);
* ``predict(images, class_names)`` for batch methods, and ``predict_set(images, class_name)``
  for transductive ones (MuSc scores each image against the other test images of its class);
* ``trains``: whether the method learns anything from auxiliary data (TPS, AnomalyCLIP).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from tpslab.utils import TPSLabError


@dataclass
class Prediction:
    """What a detector's ``predict`` (or ``predict_set``) returns.

    Attributes:
        image_scores: (B,) image scores, higher = more anomalous. A probability of "anomalous"
            in [0, 1] for every method but MuSc, whose scores (RsCIN-smoothed maxima of its maps)
            only rank the images of a class.
        anomaly_maps: (B, H, W) at the input size, unsmoothed (TPS: in [0, number of layers]).
        extras: method-specific read-outs (TPS with ``return_layers``: ``"layer_probs"``, per
            layer (B, 2, H, W); WinCLIP's window scores; MuSc's groups).
    """

    image_scores: torch.Tensor
    anomaly_maps: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalProtocol:
    """How maps are turned into metrics: a method's reference protocol, or a comparison's.

    A method's :attr:`Detector.protocol` gives its reference code's settings; ``tpslab compare``
    also scores every stored run under a *harmonised* protocol (one size, one sigma, one mask
    rule), where ``None`` means "the method's own".

    Attributes:
        image_size: size the maps are scored at (518 for TPS, 240 for WinCLIP); None: the method's own.
        sigma: Gaussian sigma in pixels applied to the maps before the metrics (0: none); None: the method's own.
        source: where the protocol comes from (a reference file, or a decision in docs/baselines.md, section 8).
        name: ``"reference"`` or ``"harmonised"``.
        mask_rule: how masks are binarised (``"gt_half"``, MuSc's ``"eq_one"``); None: the method's own.
        aupro_method: ``"exact"`` or ``"authors"``.
    """

    image_size: int | None
    sigma: float | None
    source: str = ""
    name: str = "reference"
    mask_rule: str | None = None
    aupro_method: str = "exact"


SIGMA_AT_518 = 4.0  # the reference smoothing: the authors' (and AnomalyCLIP's) test code, sigma 4 px on 518 px maps


def scaled_sigma(sigma_at_518: float, image_size: int) -> float:
    """A sigma given at 518 px, in proportion at ``image_size`` (4 px at 518 -> about 0.49 px at 64).

    >>> round(scaled_sigma(4.0, 259), 6)
    2.0
    """
    return sigma_at_518 * image_size / 518


class Detector(nn.Module):
    """Base class of the methods: a frozen (or partly learned) model that scores images.

    Subclasses set the class attributes, store their settings dataclass in ``self.settings``
    and a ``preprocess`` callable, and implement :meth:`predict` (and :meth:`predict_set`
    when ``transductive``).
    """

    method: ClassVar[str] = ""  # registry name: "tps", "clip", "winclip", "anomalyclip", "musc"
    trains: ClassVar[bool] = False  # learns from auxiliary data (tpslab train --method NAME)
    transductive: ClassVar[bool] = False  # scores a whole class at once (predict_set)

    settings: Any
    backbone: nn.Module  # the frozen CLIP (:class:`tpslab.backbone.core.Backbone`)

    @property
    def image_size(self) -> int:
        """Input size S of the (B, 3, S, S) images that :meth:`predict` takes."""
        return self.backbone.image_size

    def train(self, mode: bool = True) -> Detector:
        """Set training mode for the learnable parts; CLIP always stays in eval mode."""
        super().train(mode)
        self.backbone.train(False)
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned parameters only (what a checkpoint stores); CLIP stays out."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    @property
    def protocol(self) -> EvalProtocol:
        """The method's reference evaluation protocol."""
        raise NotImplementedError

    @property
    def mask_rule(self) -> str:
        """How evaluation binarises resized masks: ``"gt_half"`` (> 0.5) for every method, unless one asks."""
        return "gt_half"

    def predict(self, images: torch.Tensor, class_names: list[str] | None = None) -> Prediction:
        """Image scores in [0, 1] and unsmoothed maps at the input size.

        Args:
            images: (B, 3, S, S), preprocessed with ``self.preprocess``.
            class_names: one class name per image (``_`` as in the data set's folders);
                methods that do not use it accept None.

        Returns:
            A :class:`Prediction`: ``image_scores`` (B,), ``anomaly_maps`` (B, S, S).
        """
        raise NotImplementedError

    def predict_set(self, images: torch.Tensor, class_name: str, defect_types: list[str] | None = None) -> Prediction:
        """Score all test images of one class together (transductive methods); others predict per batch.

        Args:
            images: (N, 3, S, S), every test image of the class.
            class_name: the class.
            defect_types: each image's defect type (``good`` for normal images); MuSc deals large
                classes into groups stratified by it.
        """
        if self.transductive:
            raise NotImplementedError
        return self.predict(images, [class_name] * len(images))


def learnable_seed(settings: Any) -> int:
    """The seed of a trained method's learnable parameters: ``init_seed``, else ``seed + 1``.

    ``seed`` also seeds random CLIP weights; a comparison's replicates change ``init_seed``
    alone, so they share one CLIP (random or not) and differ in what is learned.
    """
    init = getattr(settings, "init_seed", None)
    return int(settings.seed) + 1 if init is None else int(init)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the body, then the module's previous mode again (even if the body raises)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def check_class_names(class_names: list[str] | None, n: int, method: str) -> list[str]:
    """The class name of each of ``n`` images, or a clear error if they are missing."""
    if class_names is None:
        raise TPSLabError(f"{method} needs the class name of every image (class_names=...)")
    if len(class_names) != n:
        raise TPSLabError(f"{method}: {len(class_names)} class names for {n} images")
    return list(class_names)
