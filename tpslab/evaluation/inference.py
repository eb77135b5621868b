"""Running a detector over a data set fast: precision, loader workers, smoothing on the device, stage timing.

:func:`stream_maps` is what :func:`tpslab.evaluation.evaluate.evaluate` and
:func:`tpslab.evaluation.evaluate.predict_dataset` consume: batches of (items, image scores, smoothed maps
on the host). Around the detector's own ``predict`` it adds

* ``torch.inference_mode`` (no autograd bookkeeping at all);
* a ``precision`` for the forward: ``fp32``, ``bf16`` or ``fp16`` autocast; ``auto`` is fp32
  on the CPU and bf16 on CUDA (fp16 where the GPU has no bf16), fp32 for transductive methods
  (MuSc keeps its own precision setting);
* DataLoader workers that decode and resize the images (``pin_memory`` and
  ``persistent_workers`` on CUDA);
* Gaussian smoothing with :func:`tpslab.evaluation.smoothing.gaussian_blur` where the maps were made
  (a torch convolution on a GPU, scipy on the CPU: equal to ``scipy.ndimage.gaussian_filter``);
* maps moved to the host in ``map_dtype`` (float16 halves the transfer and lets
  :class:`tpslab.metrics.pixel_pool.PixelPool` count instead of sort);
* optional per-stage wall times (load, forward, smoothing, and the caller's metrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from tpslab.configs import MAP_DTYPES, PRECISIONS  # noqa: F401 - re-exported
from tpslab.configs import default_workers as configs_default_workers
from tpslab.evaluation.smoothing import gaussian_blur
from tpslab.methods.base import Detector
from tpslab.utils import TPSLabError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def default_workers(device: torch.device | str = "cuda") -> int:
    """DataLoader workers when none are given: on CUDA the number of cores, capped at 8; on the CPU none.

    On the CPU, worker processes compete with torch's own threads for the cores during the
    forward: measured on 2 cores (60 images at 518 px, a 24-block ViT), evaluation took
    1.09x the CLIP forward without workers and 1.4-1.6x with two, while decoding the images
    in the main process took 0.4 s in all. (:func:`tpslab.configs.default_workers` by device type.)
    """
    return configs_default_workers(torch.device(device).type)


@cache
def cpu_bf16_attention() -> bool:
    """Whether this CPU's PyTorch kernels run attention in bfloat16.

    Without AVX-512 (or under ``ATEN_CPU_CAPABILITY=default``) PyTorch's CPU attention kernel
    refuses bfloat16 inputs of a transformer's size ("pack_vnni2 is only supported when avx512 is
    supported"), so bf16 autocast cannot run a CLIP there.
    """
    q = torch.zeros(1, 1, 128, 32, dtype=torch.bfloat16)
    try:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError:
        return False
    return True


def resolve_precision(precision: str, device: torch.device | str, transductive: bool = False) -> str:
    """``auto`` -> ``fp32`` on the CPU and for transductive methods, ``bf16`` on CUDA (``fp16`` without bf16).

    Raises:
        TPSLabError: an unknown precision, or bf16 on a CPU whose kernels cannot run it.
    """
    if precision not in PRECISIONS:
        raise TPSLabError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and torch.device(device).type == "cpu" and not cpu_bf16_attention():
        raise TPSLabError("precision bf16: this CPU's PyTorch kernels cannot run attention in bfloat16 (it needs "
                          "AVX-512); use fp32 (evaluate.precision=fp32, the CPU's default)")
    if precision != "auto":
        return precision
    if torch.device(device).type != "cuda" or transductive:
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager[Any]:
    """The autocast context of a resolved precision (``fp32``: none) on ``device``'s type."""
    if precision == "fp32":
        return nullcontext()
    if precision not in _AUTOCAST:
        raise TPSLabError(f"precision must be fp32, bf16 or fp16 here, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=_AUTOCAST[precision])


@dataclass
class StageTimer:
    """Wall seconds per stage, summed over calls; CUDA work is synchronised at each stage's end.

    Synchronising costs some overlap on a GPU: pass a timer only when measuring.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    device: torch.device | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _stage(timer: StageTimer | None, name: str) -> AbstractContextManager[Any]:
    return timer.stage(name) if timer is not None else nullcontext()


def make_loader(dataset: Dataset | list[dict[str, Any]], batch_size: int, num_workers: int,
                device: torch.device | str) -> DataLoader:
    """A DataLoader in data set order: ``num_workers`` processes decode and resize; pinned memory on CUDA."""
    cuda = torch.device(device).type == "cuda"
    workers = num_workers if isinstance(dataset, Dataset) else 0  # a list of items is already loaded
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=cuda, persistent_workers=cuda and workers > 0)


def _timed_iter(loader: Any, timer: StageTimer | None) -> Iterator[Any]:
    """The loader's batches; the wait for each counts as the ``load`` stage."""
    it = iter(loader)
    while True:
        with _stage(timer, "load"):
            item = next(it, None)
        if item is None:
            return
        yield item


def stream_maps(model: Detector, dataset: Dataset | list[dict[str, Any]], batch_size: int, sigma: float,
                device: torch.device | str, precision: str = "auto", num_workers: int = 0,
                map_dtype: str = "float32", progress: bool = False, desc: str = "predict",
                timer: StageTimer | None = None) -> Iterator[tuple[dict[str, Any], np.ndarray, torch.Tensor]]:
    """(batch of items, image scores (B,) float32, smoothed maps (B, S, S) on the host in ``map_dtype``).

    A transductive method gets the whole ``dataset`` (one class) in one call. The model is
    put in eval mode on ``device``. Memory on the device: one batch of images, the model's
    activations and two padded float32 copies of the batch's maps while smoothing.

    Args:
        model: any detector.
        dataset: the images, preprocessed at ``model.image_size`` (or a list of its items).
        batch_size: images per forward pass.
        sigma: Gaussian smoothing in px (0: none).
        device: where the model runs.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`resolve_precision`).
        num_workers: DataLoader worker processes (0: load in this process).
        map_dtype: ``float16`` or ``float32``: the maps' dtype on the host.
        progress: show a progress bar.
        desc: its label.
        timer: add the ``load``, ``forward`` and ``smoothing`` wall times to it.
    """
    if map_dtype not in MAP_DTYPES:
        raise TPSLabError(f"map_dtype must be one of {MAP_DTYPES}, got {map_dtype!r}")
    device = torch.device(device)
    model.eval().to(device)
    mode = resolve_precision(precision, device, model.transductive)
    out_dtype = getattr(torch, map_dtype)
    loader = make_loader(dataset, batch_size, num_workers, device)
    batches = _timed_iter(tqdm(loader, desc=desc, disable=not progress, leave=False), timer)
    if model.transductive:
        items = list(batches)
        whole = {k: torch.cat([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
                 else [v for it in items for v in it[k]] for k in items[0]}
        classes = sorted(set(whole["cls_name"]))
        if len(classes) != 1:
            raise TPSLabError(f"{model.method} scores one class at a time; got {', '.join(classes)}")
        batches = iter([whole])
    with torch.inference_mode():
        for item in batches:
            with _stage(timer, "forward"), autocast(mode, device):
                images = item["image"].to(device, non_blocking=True)
                if model.transductive:
                    pred = model.predict_set(images, item["cls_name"][0], list(item["specie_name"]))
                else:
                    pred = model.predict(images, list(item["cls_name"]))
            with _stage(timer, "smoothing"):
                maps = gaussian_blur(pred.anomaly_maps.float(), sigma) if sigma > 0 else pred.anomaly_maps.float()
                maps = maps.to(out_dtype).cpu()
                scores = pred.image_scores.float().cpu().numpy()
            yield item, scores, maps
