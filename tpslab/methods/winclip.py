r"""WinCLIP, zero-shot (Jeong et al., CVPR 2023): a prompt ensemble and window embeddings.

WinCLIP trains nothing. It scores an embedding e against two text embeddings, the mean
normal prompt t_n and the mean anomalous prompt t_a (:mod:`tpslab.methods.winclip_prompts`):

.. math::  s(e) = \mathrm{softmax}\big(\cos(e, [t_n, t_a]) / \tau\big)_a, \qquad \tau = 0.07  \quad \text{(Eq. 1)}

* the **image score** is s of the image embedding (anomalib ``torch_model.py:296``, zqhang ``:422``);
* **window scores**: every 2x2 and every 3x3 window of the patch grid (stride 1 patch) gets its
  own embedding by token selection (:meth:`tpslab.backbone.core.Backbone.encode_windows`) and its score s;
* per scale, each patch gets the **harmonic mean** of the scores of the windows covering it
  (:func:`harmonic_aggregation`, anomalib ``utils.py:169-212``);
* the zero-shot **map** is the harmonic mean of the 2x2 map, the 3x3 map and the image score
  (:func:`harmonic_mean`, anomalib ``torch_model.py:333-340``, zqhang ``:434``), bilinear to the
  input size (anomalib ``:306-310``); no smoothing.

Spec: ``docs/baselines.md`` section 2 and decision 8.2 (``#decision-8-2``). No official code exists; anomalib's
``WinClipModel`` is the reference, and this module equals it on identical weights (checked to
1e-4 on the tiny backbone in a separate environment; see the issue).

>>> from tpslab.methods import build_method
>>> winclip = build_method("winclip", backbone="tpslab-tiny")  # doctest: +SKIP
>>> pred = winclip.predict(images, ["bottle"] * len(images))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from tpslab.backbone.core import Backbone, build_backbone
from tpslab.methods.base import Detector, EvalProtocol, Prediction, check_class_names
from tpslab.methods.tps.model import make_preprocess
from tpslab.methods.winclip_prompts import CLASS_WORDS, TEMPLATES, class_word, prompt_ensemble
from tpslab.utils import SettingsDict, TPSLabError

REFERENCE_BACKBONE = "ViT-B-16-plus-240"  # anomalib torch_model.py:47
REFERENCE_PRETRAINED = "laion400m_e31"  # anomalib torch_model.py:48; zqhang :180 hard-codes it too


@dataclass
class Settings(SettingsDict):
    """WinCLIP's settings; the defaults are the reference's (anomalib ``torch_model.py:47-49, 97``)."""

    SECTION = "winclip"

    backbone: str = REFERENCE_BACKBONE  # open_clip architecture, or a test one such as "tpslab-tiny"
    pretrained: str | None = "auto"  # "auto": laion400m_e31 for ViT-B-16-plus-240, random weights otherwise
    image_size: int | None = None  # input size; None: the backbone's own (240 for ViT-B-16-plus-240)
    templates: str = "anomalib21"  # "anomalib21" (with its duplicate) or "paper22" (see winclip_prompts)
    class_word: str = "raw"  # "raw" class folder name (zqhang, anomalib) or "spaces" (_ -> space, mala-lab)
    scales: tuple[int, ...] = (2, 3)  # window sizes in patches, stride 1 patch
    temperature: float = 0.07  # tau of Eq. 1 (anomalib torch_model.py:49, zqhang :199)
    max_tokens_per_call: int = 32768  # tokens per transformer call for the windows (memory only)
    quick_gelu: bool | None = None  # None: as the weights need (QuickGELU for "openai" only)
    seed: int = 0  # seed of random weights

    def __post_init__(self) -> None:
        if self.pretrained == "auto":
            self.pretrained = REFERENCE_PRETRAINED if self.backbone == REFERENCE_BACKBONE else None
        self.scales = tuple(int(k) for k in self.scales)
        if self.templates not in TEMPLATES:
            raise TPSLabError(f"winclip templates must be one of {', '.join(TEMPLATES)}, got {self.templates!r}")
        if self.class_word not in CLASS_WORDS:
            raise TPSLabError(f"winclip class_word must be one of {', '.join(CLASS_WORDS)}, got {self.class_word!r}")
        if not self.scales or min(self.scales) < 1:
            raise TPSLabError(f"winclip scales must be window sizes >= 1 patch, got {self.scales}")


# -- the equations -----------------------------------------------------------------
def window_masks(grid: int, size: int, stride: int = 1) -> torch.Tensor:
    """Patch indices of every ``size`` x ``size`` window of a ``grid`` x ``grid`` patch grid.

    Windows are listed row-major by their top-left patch, and each window's patches row-major:
    anomalib's ``make_masks`` (``utils.py:246-307``), transposed to one row per window.

    Args:
        grid: patches per side g (15 for ViT-B-16-plus-240 at 240 px).
        size: window side k in patches.
        stride: step between windows in patches.

    Returns:
        (n_win, k*k) long; n_win = ((g - k) // stride + 1) ** 2 (196 of 2x2 and 169 of 3x3 on 15x15).

    >>> window_masks(3, 2).tolist()
    [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    """
    if not 1 <= size <= grid:
        raise TPSLabError(f"a {size}x{size} window does not fit a {grid}x{grid} patch grid")
    index = torch.arange(grid * grid).reshape(grid, grid)  # (g, g)
    tiles = index.unfold(0, size, stride).unfold(1, size, stride)  # (n, n, k, k): windows, then patches
    return tiles.reshape(-1, size * size)  # (n_win, k*k)


def anomaly_probability(embeddings: torch.Tensor, text: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Eq. 1: s(e) = softmax(cos(e, [t_n, t_a]) / tau)[anomalous] (anomalib ``utils.py:126-166``).

    Args:
        embeddings: (B, N, D) image or window embeddings, not normalised.
        text: (B, 2, D) the normal and anomalous text embedding of each image's class, or (2, D).
        temperature: tau.

    Returns:
        (B, N) probabilities of "anomalous".
    """
    text = text.expand(embeddings.shape[0], -1, -1) if text.ndim == 2 else text  # (B, 2, D)
    cos = F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).transpose(1, 2)  # (B, N, 2)
    return (cos / temperature).softmax(dim=-1)[..., 1]


def harmonic_aggregation(window_scores: torch.Tensor, windows: torch.Tensor, grid: int) -> torch.Tensor:
    """Per patch, the harmonic mean of the scores of the windows that cover it.

    M(p) = |W_p| / sum_{w in W_p} 1 / s_w, where W_p is the set of windows containing patch p
    (anomalib ``utils.py:169-212``, zqhang ``:210-222``). A zero score makes M(p) = 0; a patch
    that no window covers gets 0.

    Args:
        window_scores: (B, n_win) scores of the windows.
        windows: (n_win, k*k) patch indices of each window (:func:`window_masks`).
        grid: patches per side g.

    Returns:
        (B, g, g) score map.

    >>> scores = torch.tensor([[1.0, 0.75, 0.5, 0.25]])
    >>> harmonic_aggregation(scores, window_masks(3, 2), 3).round(decimals=4)
    tensor([[[1.0000, 0.8571, 0.7500],
             [0.6667, 0.4800, 0.3750],
             [0.5000, 0.3333, 0.2500]]])
    """
    n_win = windows.shape[0]
    cover = torch.zeros(n_win, grid * grid, dtype=torch.bool, device=windows.device)
    cover[torch.arange(n_win, device=windows.device)[:, None], windows] = True  # (n_win, L): window covers patch
    inverse = torch.where(cover, 1 / window_scores[..., None], 0.0).sum(dim=1)  # (B, L): sum of 1/s, covering windows
    maps = cover.sum(dim=0) / inverse  # (B, L); 1/0 = inf -> 0, 0/0 = nan -> 0 below
    return maps.nan_to_num(nan=0.0, posinf=0.0).reshape(-1, grid, grid)  # (B, g, g)


def harmonic_mean(maps: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise harmonic mean n / sum_i 1 / M_i of same-shaped maps (anomalib ``torch_model.py:333-340``).

    WinCLIP's zero-shot map is ``harmonic_mean([map_2x2, map_3x3, image_score_map])``.

    >>> harmonic_mean([torch.tensor([0.5]), torch.tensor([0.25]), torch.tensor([1.0])])
    tensor([0.4286])
    """
    return len(maps) / sum(1 / m for m in maps)


# -- the detector ------------------------------------------------------------------
class WinCLIP(Detector):
    """Zero-shot WinCLIP on a frozen open_clip backbone.

    Args:
        settings: the method's settings.
        backbone: a prebuilt backbone (else built from ``settings``).
    """

    method: ClassVar[str] = "winclip"

    def __init__(self, settings: Settings, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.backbone = backbone or build_backbone(settings.backbone, settings.pretrained, settings.image_size,
                                                   seed=settings.seed, quick_gelu=settings.quick_gelu)
        self.preprocess = make_preprocess(self.backbone)
        g = self.backbone.grid_size
        for k in settings.scales:  # (n_win, k*k) per scale, moved with the module
            self.register_buffer(f"windows_{k}", window_masks(g, k), persistent=False)
        self.register_buffer("whole_image", torch.arange(g * g)[None], persistent=False)  # (1, L)
        self._text: dict[str, torch.Tensor] = {}  # class word -> (2, D), computed once

    @property
    def protocol(self) -> EvalProtocol:
        """Maps at the input size, no smoothing (anomalib ``torch_model.py:306-310``; zqhang ``:446``)."""
        return EvalProtocol(self.image_size, 0.0, "anomalib torch_model.py:306-310; docs/baselines.md#decision-8-2")

    def windows(self, size: int) -> torch.Tensor:
        """(n_win, size*size) patch indices of the windows of one scale."""
        return getattr(self, f"windows_{size}")

    @torch.no_grad()
    def text_embeddings(self, class_name: str) -> torch.Tensor:
        """(2, D): the mean of the *unnormalised* normal prompt embeddings, then the anomalous one.

        anomalib ``torch_model.py:396-402``, zqhang ``:288-292`` (mala-lab normalises before and
        after the mean instead). Cached per class word.
        """
        word = class_word(class_name, self.settings.class_word)
        if word not in self._text:
            normal, anomalous = prompt_ensemble(word, self.settings.templates)
            self._text[word] = torch.stack([self.backbone.encode_sentences(normal).mean(dim=0),
                                            self.backbone.encode_sentences(anomalous).mean(dim=0)])  # (2, D)
        return self._text[word]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_names: list[str] | None = None, *,
                return_parts: bool = False) -> Prediction:
        """Image scores and zero-shot maps.

        Args:
            images: (B, 3, S, S), preprocessed with ``self.preprocess``.
            class_names: one class folder name per image.
            return_parts: also return the intermediate scores in ``extras`` (for figures):
                ``window_scores[k]`` (B, n_win), ``scale_maps[k]`` (B, g, g) for each scale k,
                and ``grid_map`` (B, g, g), the zero-shot map before upsampling.

        Returns:
            ``image_scores`` (B,) and ``anomaly_maps`` (B, S, S), both in [0, 1].
        """
        names = check_class_names(class_names, len(images), self.method)
        cfg, g = self.settings, self.backbone.grid_size
        text = torch.stack([self.text_embeddings(n) for n in names]).to(images.device)  # (B, 2, D)
        image_emb = self.backbone.encode_windows(images, self.whole_image, cfg.max_tokens_per_call)  # (B, 1, D)
        image_scores = anomaly_probability(image_emb, text, cfg.temperature)[:, 0]  # (B,)
        window_scores, scale_maps = {}, {}
        for k in cfg.scales:
            emb = self.backbone.encode_windows(images, self.windows(k), cfg.max_tokens_per_call)  # (B, n_win, D)
            window_scores[k] = anomaly_probability(emb, text, cfg.temperature)  # (B, n_win)
            scale_maps[k] = harmonic_aggregation(window_scores[k], self.windows(k), g)  # (B, g, g)
        image_map = image_scores[:, None, None].expand(-1, g, g)  # (B, g, g): the whole image as one more scale
        grid_map = harmonic_mean([*scale_maps.values(), image_map])  # (B, g, g)
        maps = F.interpolate(grid_map[:, None], size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]  # (B, S, S)
        extras = dict(window_scores=window_scores, scale_maps=scale_maps, grid_map=grid_map) if return_parts else {}
        return Prediction(image_scores, maps, extras)


def build(settings: Settings) -> WinCLIP:
    """The method registry's constructor (:func:`tpslab.methods.build_method`)."""
    return WinCLIP(settings)
