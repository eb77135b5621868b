"""MuSc (Li et al., ICLR 2024): zero-shot anomaly detection by mutual scoring of unlabelled test images.

Training-free and *transductive*: every test image of a class is scored against the other
test images of that class, so the method only has :meth:`MuSc.predict_set`. For one group of
N images, as the reference code (xrli-U/MuSc, ``models/musc.py``) does:

1. raw residual-stream patch tokens of blocks 6/12/18/24 of the CLIP image tower (no
   ``ln_post``, no ``proj``), and the L2-normalised image embedding (``ln_post`` + ``proj``);
2. for each degree r in {1, 3, 5} and each block: :func:`~tpslab.methods.musc_ops.lnamd`,
   then :func:`~tpslab.methods.musc_ops.msm` -> (N, L) patch scores;
3. mean over blocks, then over degrees; bilinear upsampling to the input size with
   ``align_corners=True``; no smoothing;
4. image score = maximum of the map, then :func:`~tpslab.methods.musc_ops.rscin` over the
   whole class (all groups together, as the reference concatenates them before RsCIN).

Large classes are split into groups (:func:`~tpslab.methods.musc_ops.deal_groups`); the
assignment is returned in ``Prediction.extras["groups"]``.

Cost per class (one group of N images, L patches, C channels, |R| = 3 degrees, 4 blocks):
time ``12 N (N-1)/2 L^2 C`` multiply-adds for MSM (each unordered pair of images once; plus N
forward passes of the backbone); memory ``4 N L C`` tokens (2 bytes each under ``amp`` on CUDA,
else 4), about ``3 N L C`` float32 working copies for the current block and degree (LayerNorm,
pooling, the LNAMD features), one MSM block of ``chunk`` distances, MSM's ``N L N`` nearest
distances and the ``N S^2`` maps. ViT-L at 518 px: L = 1369, C = 1024, so N = 200 costs 4.6e14
multiply-adds, 2.2 GB of fp16 tokens and ~3.4 GB of working copies. Measured on 2 busy CPU
cores: 60-150 GMAC/s, i.e. ~3 s per MSM call at N = 16, ~1 min at N = 64 and a projected 6-9 min
per call at N = 200 (``benchmarks/bench_musc.py``): paper scale is a GPU job.

Scores: the maps are mean nearest-neighbour distances between unit vectors (in [0, 2]), not
probabilities. The image scores are RsCIN's smoothed min-max-normalised maxima: in [0, 1] when
the kept image similarities are non-negative, and meaningful only as a ranking within the class.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tpslab.backbone.core import Backbone, build_backbone, default_layers
from tpslab.data.dataset import MASK_RULES
from tpslab.methods.base import Detector, EvalProtocol, Prediction
from tpslab.methods.musc_ops import (
    HALF_DTYPES,
    MSM_INTERVAL,
    auto_group_size,
    deal_groups,
    lnamd,
    msm,
    msm_ranks,
    rscin,
)
from tpslab.methods.tps.model import make_preprocess
from tpslab.utils import SettingsDict, TPSLabError

log = logging.getLogger(__name__)

POS_RESIZE = ("bicubic", "open_clip", "bilinear")


@dataclass
class Settings(SettingsDict):
    """Everything that defines a MuSc run (docs/baselines.md#decision-8-4: defaults = the reference at 518 px)."""

    SECTION = "musc"

    backbone: str = "ViT-L-14-336"  # open_clip architecture (any ViT; "tpslab-tiny" for smoke tests)
    pretrained: str | None = "openai"  # weights tag or file; None = seeded random
    image_size: int | None = 518  # input size; None = the architecture's own
    quick_gelu: bool = False  # reference: plain GELU with the OpenAI weights at 518 (True: the weights' own activation)
    pos_resize: str = "bicubic"  # position-grid resize: "bicubic" (reference, no antialias), "open_clip", "bilinear"
    blocks: tuple[int, ...] | None = None  # 1-based blocks; None = 6/12/18/24 scaled to the depth
    r_list: tuple[int, ...] = (1, 3, 5)  # LNAMD aggregation degrees
    interval: tuple[float, float] = MSM_INTERVAL  # MSM: ranks averaged, fractions of the N-1 other images
    k_list: tuple[int, ...] = (1, 2, 3)  # RsCIN neighbourhoods; (1, 8, 9) for VisA (reference_k_list); (0,) = none
    group_size: int | None = None  # None: whole class, or groups of 200 above 1000 images
    group_seed: int = 42  # seed of the stratified dealing into groups (reference: 42)
    masks: str = "gt_half"  # mask binarisation for evaluation: "gt_half" (> 0.5) or "eq_one" (reference)
    batch_size: int = 8  # images per backbone forward pass
    chunk: int = 2**24  # MSM: most distances computed at once (64 MB in float32)
    precision: str = "float32"  # MSM features on CUDA: "float32" (reference), "float16", "bfloat16"
    amp: bool = True  # fp16 autocast of the backbone on CUDA, as the reference (musc.py:161); no-op on CPU
    seed: int = 0  # seed of random backbone weights

    def __post_init__(self) -> None:
        for name in ("blocks", "r_list", "interval", "k_list"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        if self.pos_resize not in POS_RESIZE:
            raise TPSLabError(f"pos_resize must be one of {POS_RESIZE}, got {self.pos_resize!r}")
        if self.masks not in MASK_RULES:
            raise TPSLabError(f"masks must be one of {MASK_RULES}, got {self.masks!r}")
        if self.precision not in HALF_DTYPES:
            raise TPSLabError(f"precision must be one of {sorted(HALF_DTYPES)}, got {self.precision!r}")
        if any(r < 1 or r % 2 == 0 for r in self.r_list) or not self.r_list:
            raise TPSLabError(f"r_list must hold odd positive degrees, got {self.r_list}")
        if len(self.interval) != 2:
            raise TPSLabError(f"interval must be (low, high), got {self.interval}")


def reference_k_list(dataset: str) -> tuple[int, ...]:
    """RsCIN's neighbourhood sizes as the reference picks them by data set name (musc.py:242-248).

    >>> reference_k_list("visa"), reference_k_list("mvtec"), reference_k_list("btad")
    ((1, 8, 9), (1, 2, 3), (1, 2, 3))
    """
    return (1, 8, 9) if dataset.lower() == "visa" else (1, 2, 3)



def mutual_maps(
    tokens: Sequence[torch.Tensor],
    r_list: Sequence[int] = (1, 3, 5),
    interval: tuple[float, float] = MSM_INTERVAL,
    chunk: int = 2**24,
    precision: str = "float32",
) -> torch.Tensor:
    """Patch-level mutual scores of one group: LNAMD + MSM per (degree, block), averaged.

    Reference: musc.py:186-218 (mean over the blocks for each r, then mean over r).

    Args:
        tokens: one (N, L, C) tensor of raw patch tokens per block.
        r_list: LNAMD degrees.
        interval: MSM rank interval.
        chunk: MSM block size (distances).
        precision: MSM feature precision on CUDA.

    Returns:
        (N, L) float64 scores on the tokens' device.
    """
    per_r = []
    for r in r_list:
        per_block = [msm(lnamd(_fp32(t), r), interval, chunk, precision).double() for t in tokens]  # each (N, L)
        per_r.append(torch.stack(per_block).mean(0))
    return torch.stack(per_r).mean(0)  # (N, L)


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tokens (autocast) to float32: the reference's LayerNorm runs in float32 under autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def upsample_maps(patch_scores: torch.Tensor, size: int) -> torch.Tensor:
    """(N, L) patch scores -> (N, size, size) maps, bilinear with ``align_corners=True`` (musc.py:225-226)."""
    n, length = patch_scores.shape
    h = round(length**0.5)
    return F.interpolate(patch_scores.view(n, 1, h, h), size=(size, size), mode="bilinear", align_corners=True)[:, 0]


def musc_backbone(s: Settings) -> Backbone:
    """The frozen CLIP of a MuSc run (position grid resized per ``pos_resize``; ``"bicubic"`` = the reference)."""
    return build_backbone(s.backbone, s.pretrained, s.image_size, pos_resize=s.pos_resize, seed=s.seed,
                          quick_gelu=s.quick_gelu)


class MuSc(Detector):
    """MuSc behind tpslab's method interface (transductive: use :meth:`predict_set`).

    Args:
        settings: a :class:`Settings`.
        backbone: an already built backbone (tests); default: built from ``settings``.
    """

    method = "musc"
    trains = False
    transductive = True

    def __init__(self, settings: Settings, backbone: Backbone | None = None):
        super().__init__()
        self.settings = settings
        self.backbone = backbone or musc_backbone(settings)
        self.blocks = settings.blocks or default_layers(self.backbone.num_blocks)
        if any(not 1 <= b <= self.backbone.num_blocks for b in self.blocks):
            raise TPSLabError(f"blocks {self.blocks} out of range for {self.backbone.name} "
                              f"({self.backbone.num_blocks} blocks)")
        self.preprocess = make_preprocess(self.backbone)

    @property
    def mask_rule(self) -> str:
        """How evaluation binarises the resized masks (``settings.masks``; ``"eq_one"`` = the reference)."""
        return self.settings.masks

    @property
    def protocol(self) -> EvalProtocol:
        """Its own input size, no smoothing (the reference's)."""
        return EvalProtocol(self.image_size, 0.0, "MuSc musc.py:225-226 (own input size, no smoothing)")

    @property
    def device(self) -> torch.device:
        """Where the backbone is."""
        return self.backbone.clip.visual.conv1.weight.device

    def predict(self, images: torch.Tensor, class_names: list[str] | None = None) -> Prediction:
        """Not available: MuSc scores a whole class at once (:meth:`predict_set`)."""
        raise TPSLabError("MuSc is transductive: score a whole class at once with predict_set(images, class_name)")

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image embeddings (N, D) and raw patch tokens [(N, L, W)] per block, on the model's device.

        Runs in batches of ``batch_size``; under fp16 autocast on CUDA when ``amp`` (the tokens
        are then kept in float16, as the reference's are).
        """
        dev = self.device
        amp = self.settings.amp and dev.type == "cuda"
        embs, toks = [], []
        for b0 in range(0, len(images), self.settings.batch_size):
            x = images[b0:b0 + self.settings.batch_size].to(dev, torch.float32)
            with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
                emb, blocks = self.backbone.raw_blocks(x, self.blocks)  # (B, D), [(B, L, W)]
            embs.append(emb.float())
            toks.append([t.half() if amp else t for t in blocks])
        tokens = [torch.cat([t[k] for t in toks]) for k in range(len(self.blocks))]
        return torch.cat(embs), tokens

    @torch.no_grad()
    def predict_set(self, images: torch.Tensor, class_name: str = "",
                    defect_types: Sequence[str] | None = None) -> Prediction:
        """Score all test images of one class together.

        Args:
            images: (N, 3, S, S) preprocessed images of one class (CPU is fine; moved per batch).
            class_name: the class (not used by the method; kept for the interface and logs).
            defect_types: the defect type of each image (``specie_name``), used to deal a large
                class into groups stratified by type; None = one type.

        MSM runs within each group; RsCIN over the whole class (the reference concatenates the
        groups' maxima and embeddings before RsCIN, musc.py:139-248).

        Returns:
            A :class:`~tpslab.methods.base.Prediction` on the CPU: ``image_scores`` (N,) after RsCIN,
            ``anomaly_maps`` (N, S, S) float32, and ``extras`` with ``groups`` (N,) the group of
            each image, ``group_size``, ``n_groups``, ``max_scores`` (N,) the maxima before
            RsCIN, ``k_list``, ``blocks`` and ``masks`` (the binarisation rule for evaluation).

        Raises:
            TPSLabError: if a group has too few images for MSM (fewer than 5 by default) or
                the class fewer than ``max(k_list)`` for RsCIN.
        """
        s = self.settings
        n = len(images)
        types = list(defect_types) if defect_types is not None else ["?"] * n
        if len(types) != n:
            raise TPSLabError(f"musc: {len(types)} defect types for {n} images")
        size = auto_group_size(n, s.group_size)
        groups = deal_groups(types, size, s.group_seed)
        for g in groups:
            try:
                msm_ranks(len(g), s.interval)
            except TPSLabError as err:
                raise TPSLabError(f"class {class_name!r} ({n} images, {len(groups)} group(s)): {err}") from None
        maps = torch.empty(n, self.image_size, self.image_size)
        max_scores = torch.empty(n, dtype=torch.float64)
        embeddings = torch.empty(n, self.backbone.embed_dim)
        group_of = torch.empty(n, dtype=torch.long)
        for gi, idx in enumerate(groups):
            log.info("musc %s: group %d/%d, %d images", class_name, gi + 1, len(groups), len(idx))
            emb, tokens = self.features(images[idx])
            patch = mutual_maps(tokens, s.r_list, s.interval, s.chunk, s.precision)  # (G, L) float64
            up = upsample_maps(patch, self.image_size)  # (G, S, S) float64
            max_scores[idx] = up.flatten(1).amax(dim=1).cpu()  # musc.py:240: max of the upsampled map
            maps[idx] = up.float().cpu()
            embeddings[idx] = emb.cpu()
            group_of[idx] = gi
        try:
            scores = rscin(max_scores, embeddings, s.k_list)
        except TPSLabError as err:
            raise TPSLabError(f"class {class_name!r}: {err}") from None
        extras = dict(groups=group_of, group_size=size, n_groups=len(groups), max_scores=max_scores.float(),
                      k_list=list(s.k_list), blocks=list(self.blocks), masks=s.masks)
        return Prediction(scores.float(), maps, extras)


def build(settings: Settings) -> MuSc:
    """Build MuSc from its settings (see :func:`tpslab.methods.build_method`)."""
    return MuSc(settings)
