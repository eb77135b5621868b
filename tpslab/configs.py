"""The settings dataclasses of a model, a training run and an evaluation, in a module without torch.

``TPSConfig`` (what defines a TPS model, saved in every checkpoint), ``TrainConfig`` (the
training recipe) and ``EvalConfig`` (how a model is evaluated) live here rather than beside
the code that uses them (:mod:`tpslab.methods.tps.model`, :mod:`tpslab.methods.train`,
:mod:`tpslab.evaluation.evaluate`,
which re-export them) so that the command line can show their defaults in ``--help``
without importing torch or open_clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from tpslab.utils import SettingsDict, TPSLabError, resolve_device

AUPRO_METHODS = ("exact", "authors")  # "exact": every threshold; "authors": their 200 thresholds
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # evaluation forward: autocast dtype ("auto": fp32 CPU, bf16 CUDA)
MAP_DTYPES = ("float16", "float32")  # maps on the host during evaluation
CACHE_DTYPES = ("auto", "float16", "float32")  # frozen features on disk ("auto": float16 from 1 MiB per image)
VARIANTS = ("paper", "authors-code")
EXECUTORS = ("local", "local-parallel", "slurm")  # how tpslab compare runs its jobs


def default_workers(device_type: str = "cuda") -> int:
    """DataLoader workers when none are given: on CUDA the cores, capped at 8; on the CPU none.

    (On a 2-core CPU, worker processes slowed the forward more than decoding in the main process costs.)
    """
    return max(1, min(os.cpu_count() or 1, 8)) if device_type == "cuda" else 0


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
    init_seed: int | None = None  # seeds the learnable parameters alone; None: seed + 1 (replicates vary it)

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


# TrainConfig fields a resumed run may change (they do not change the results)
# (threads changes the order of float sums only: a resumed run keeps the checkpoint's unless told otherwise)
NO_EFFECT_ON_RESULTS = ("device", "num_workers", "cache_features", "disk_cache", "threads")


@dataclass
class TrainConfig(SettingsDict):
    """The training recipe (defaults: the paper's, from the spec)."""

    SECTION: ClassVar[str] = "training"

    epochs: int = 15  # passes over the auxiliary data
    batch_size: int = 8  # images per step
    lr_prompts: float = 1e-3  # Adam lr of both prompt learners
    lr_pathway: float = 1e-4  # Adam lr of the pathway(s) (and text projection, authors' code)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas
    seed: int = 111  # shuffling seed
    cache_features: bool = False  # compute frozen CLIP features once, reuse every epoch
    disk_cache: bool = True  # with cache_features: also keep them on disk across runs ($TPSLAB_CACHE)
    cache_dtype: str = "auto"  # features on disk: "float16", "float32"; "auto": float16 from 1 MiB per image
    num_workers: int = 0  # DataLoader workers (when not caching)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    threads: int | None = None  # torch CPU threads (a profile's ``threads``; None: torch's default), kept on resume

    def __post_init__(self) -> None:
        """Check the counts and the cache dtype."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise TPSLabError(f"{flag} {value!r} (train.{name}): expected a whole number >= 1")
        if self.cache_dtype not in CACHE_DTYPES:
            raise TPSLabError(f"cache_dtype must be one of {CACHE_DTYPES}, got {self.cache_dtype!r}")

    @classmethod
    def coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``betas`` from a file (a list) as the tuple the optimiser takes."""
        return {**data, "betas": tuple(data["betas"])} if "betas" in data else data


@dataclass
class EvalConfig(SettingsDict):
    """How a model is evaluated (a profile's ``evaluate:`` section)."""

    SECTION: ClassVar[str] = "evaluate"

    batch_size: int = 8  # images per forward pass
    sigma: float | None = None  # Gaussian smoothing of the maps in px; None = the method's reference protocol
    aupro_method: str = "exact"  # "exact" (every threshold) or "authors" (their 200 thresholds)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    precision: str = "auto"  # forward: "fp32", "bf16" or "fp16" autocast; "auto": fp32 on CPU, bf16 on CUDA
    num_workers: int | None = None  # DataLoader workers decoding images; None: the cores (at most 8) on CUDA, 0 on CPU
    map_dtype: str = "float16"  # maps on the host: "float16" (half the memory, counted) or "float32"

    def __post_init__(self) -> None:
        """Check the batch size, sigma, the AUPRO method, the precision, the workers and the map dtype."""
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TPSLabError(f"--batch-size {self.batch_size!r} (evaluate.batch_size): expected a whole number >= 1")
        if self.sigma is not None and (isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float))
                                       or self.sigma < 0):
            raise TPSLabError(f"--sigma {self.sigma!r} (evaluate.sigma): expected >= 0 px (0: no smoothing) or null")
        if self.aupro_method not in AUPRO_METHODS:
            raise TPSLabError(f"aupro_method must be one of {AUPRO_METHODS}, got {self.aupro_method!r}")
        if self.precision not in PRECISIONS:
            raise TPSLabError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.map_dtype not in MAP_DTYPES:
            raise TPSLabError(f"map_dtype must be one of {MAP_DTYPES}, got {self.map_dtype!r}")
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                             or self.num_workers < 0):
            raise TPSLabError(f"num_workers must be a whole number >= 0 or null, got {self.num_workers!r}")

    @property
    def workers(self) -> int:
        """The DataLoader workers to use: ``num_workers``, or :func:`default_workers` on the device."""
        if self.num_workers is not None:
            return self.num_workers

        return default_workers(resolve_device(self.device).type)

