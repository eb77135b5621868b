"""Per-class evaluation: image AUROC/AP, pixel AUROC/AUPRO, as in the paper's tables, and table writers.

Maps are smoothed with a Gaussian of sigma 4 px at 518 px (the authors' setting), scaled
in proportion for other image sizes. Figures are percentages; the data set figure is the
mean over classes. Anomalous images without a mask count for image metrics only.

Unlike the authors' test script, classes of 2000+ images are not averaged over chunks
of 100 images (their last chunk is scored with the masks in place of the predictions,
which inflates those numbers); every class is scored whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tpslab import metrics
from tpslab.configs import AUPRO_METHODS, EvalConfig  # noqa: F401 - re-exported here
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import Meta, load_meta
from tpslab.evaluation.inference import StageTimer, stream_maps
from tpslab.evaluation.predictions import ClassPredictions
from tpslab.evaluation.smoothing import gaussian_blur
from tpslab.methods.base import SIGMA_AT_518, Detector, scaled_sigma
from tpslab.metrics.pixel_pool import PixelPool
from tpslab.utils import TPSLabError, resolve_device

METRIC_COLUMNS = ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]


def default_sigma(image_size: int) -> float:
    """The reference smoothing of the maps (:data:`tpslab.methods.base.SIGMA_AT_518`), scaled to ``image_size``."""
    return scaled_sigma(SIGMA_AT_518, image_size)


def smooth_maps(maps: np.ndarray, image_size: int, sigma: float | None = None) -> np.ndarray:
    """Gaussian smoothing of (N, H, W) maps as evaluated: ``sigma`` px (None: :func:`default_sigma`; 0: none).

    The same as :func:`tpslab.evaluation.smoothing.gaussian_blur` (which evaluation runs where the maps are).
    """
    sigma = default_sigma(image_size) if sigma is None else sigma
    return gaussian_blur(torch.from_numpy(np.asarray(maps)), sigma).numpy() if sigma > 0 else maps


def metric_row(labels: np.ndarray, scores: np.ndarray, pool: PixelPool | None, aupro_method: str) -> dict[str, float]:
    """The four paper metrics of one class in percent: image ones from the scores, pixel ones from the pool.

    ``pool`` holds the (mask, map) pixels of the images with a mask; None (no such image): the
    pixel metrics are NaN.
    """
    pixel = pool.compute(aupro_method, which=("pixel_auroc", "pixel_aupro")) if pool is not None else {}
    row = {"image_auroc": metrics.image_auroc(labels, scores), "image_ap": metrics.image_ap(labels, scores),
           "pixel_auroc": pixel.get("pixel_auroc", math.nan), "pixel_aupro": pixel.get("pixel_aupro", math.nan)}
    return {k: 100.0 * v for k, v in row.items()}


class ClassCollector:
    """One class's predictions, gathered batch by batch (the one loop every caller shares).

    The pixel metrics' inputs are streamed into a :class:`~tpslab.metrics.pixel_pool.PixelPool`
    (unless ``pool=False``, as when predictions are only stored); the maps (and with ``keep_masks``
    the masks) are kept only when asked for.
    """

    def __init__(self, keep_maps: bool, pool_dtype: torch.dtype | None = None, pool: bool = True,
                 keep_masks: bool = True) -> None:
        self.pool = PixelPool() if pool else None
        self.keep_maps, self.keep_masks = keep_maps, keep_masks
        self.pool_dtype = pool_dtype  # what the pool gets (None: the maps as they come)
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.has_mask: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.paths: list[str] = []
        self.types: list[str] = []

    def add(self, item: dict[str, Any], scores: np.ndarray, maps: torch.Tensor) -> None:
        """Add a batch: the loader's items, the image scores and the smoothed maps (host)."""
        has_mask = np.asarray(item["has_mask"], bool)
        masks = item["mask"].numpy() > 0.5
        if self.pool is not None and has_mask.any():
            pooled = maps if self.pool_dtype is None else maps.to(self.pool_dtype)
            self.pool.update(masks[has_mask], pooled.numpy()[has_mask])
        self.scores.append(scores)
        self.labels.append(item["label"].numpy())
        self.has_mask.append(has_mask)
        self.paths += list(item["img_path"])
        self.types += list(item.get("specie_name", [""] * len(scores)))
        if self.keep_maps:
            self.maps.append(maps.numpy())
        if self.keep_maps and self.keep_masks:
            self.masks.append(masks.astype(np.uint8))

    def predictions(self) -> ClassPredictions:
        """Everything gathered (the maps and masks only if kept)."""
        maps = np.concatenate(self.maps) if self.maps else np.zeros((0, 0, 0), np.float32)
        masks = np.concatenate(self.masks) if self.masks else np.zeros((0, 0, 0), np.uint8)
        masks = masks if self.keep_masks else None
        return ClassPredictions(np.concatenate(self.scores), maps, np.concatenate(self.labels),
                                np.concatenate(self.has_mask), self.paths, self.types, masks)

    def row(self, aupro_method: str) -> dict[str, float]:
        """The four paper metrics of the class, in percent (NaN where undefined)."""
        return metric_row(np.concatenate(self.labels), np.concatenate(self.scores), self.pool, aupro_method)


def predict_dataset(model: Detector, dataset: AnomalyDataset | list[dict[str, Any]],
                    batch_size: int = EvalConfig.batch_size, sigma: float | None = None,
                    device: str | torch.device = "cpu", progress: bool = True, desc: str = "predict",
                    precision: str = "auto", num_workers: int = 0, map_dtype: str = "float32") -> ClassPredictions:
    """Run a detector over a data set (or a list of its items) and smooth the maps; keep everything.

    Holds every map (``4 S^2`` bytes per image as float32): for big classes use :func:`evaluate`,
    which streams.

    Args:
        model: any method (:mod:`tpslab.methods`); a transductive one (MuSc) gets the whole
            ``dataset`` at once, which must then hold one class.
        dataset: the images, preprocessed at ``model.image_size``.
        batch_size: images per forward pass.
        sigma: Gaussian smoothing of the maps in px; None: the method's reference protocol
            (``model.protocol.sigma``); 0: none.
        device: where the model runs.
        progress: show a progress bar.
        desc: its label.
        precision: the forward's precision (see :func:`tpslab.evaluation.inference.resolve_precision`).
        num_workers: DataLoader workers (0: load in this process).
        map_dtype: ``float32`` or ``float16`` maps.
    """
    sigma = model.protocol.sigma if sigma is None else sigma
    got = ClassCollector(keep_maps=True)
    for item, scores, maps in stream_maps(model, dataset, batch_size, sigma, device, precision, num_workers,
                                          map_dtype, progress, desc):
        got.add(item, scores, maps)
    return got.predictions()


def score_class(p: ClassPredictions, aupro_method: str = EvalConfig.aupro_method) -> dict[str, float]:
    """The four paper metrics of one class, in percent (NaN where undefined)."""
    keep, pool = np.asarray(p.has_mask, bool), None
    if keep.any():
        if p.masks is None:
            raise TPSLabError("score_class needs the ground-truth masks (ClassPredictions.masks)")
        pool = PixelPool()
        pool.update(p.masks[keep], p.maps[keep])
    return metric_row(p.labels, p.scores, pool, aupro_method)


def evaluate(model: Detector, meta: Meta | str | Path, split: str = "test", classes: list[str] | None = None,
             dataset_name: str | None = None, batch_size: int = EvalConfig.batch_size, sigma: float | None = None,
             aupro_method: str = EvalConfig.aupro_method, device: str | torch.device = "cpu", progress: bool = True,
             on_class: Callable[[str, ClassPredictions], None] | None = None, precision: str = "auto",
             num_workers: int = 0, map_dtype: str = EvalConfig.map_dtype,
             timer: StageTimer | None = None) -> pd.DataFrame:
    """Evaluate ``model`` on each class of a data set, streaming each class's pixels.

    Each batch's maps are smoothed on ``device``, moved to the host in ``map_dtype`` and added to
    a :class:`~tpslab.metrics.pixel_pool.PixelPool` with their masks (bool), then dropped. Peak memory
    per image of a class (S x S maps, ``a`` anomalous pixels): float16 maps about ``12 a`` bytes
    (about 64 kB at 518 px with 2 % anomalous; the normal pixels go into one fixed 0.5 MB
    histogram), float32 maps about ``4 S^2`` bytes (1.1 MB at 518 px), plus one batch of
    images and maps; with ``on_class``, also the float32 maps (``4 S^2`` bytes) and masks
    (``S^2``) of the class, which the callback gets (the metrics still see ``map_dtype``).

    Args:
        model: the model.
        meta: the data set (a loaded ``Meta``, or a ``meta.json`` or its folder).
        split: ``"test"`` (zero-shot protocol) or ``"train"``.
        classes: only these classes (default: all).
        dataset_name: the ``dataset`` column (default: the data set's folder name).
        batch_size: images per forward pass.
        sigma: smoothing of the maps (see :func:`predict_dataset`).
        aupro_method: ``"exact"`` or ``"authors"``.
        device: where the model runs.
        progress: show progress bars.
        on_class: called with each class's name and predictions (e.g. to pick examples); only
            then are the class's maps kept.
        precision: the forward's precision (see :func:`tpslab.evaluation.inference.resolve_precision`).
        num_workers: DataLoader workers decoding the images (0: in this process).
        map_dtype: ``float16`` (exact metrics of the rounded maps; they moved the metrics by
            < 1e-4 on synthetic 518 px maps) or ``float32``.
        timer: add the wall time of each stage (load, forward, smoothing, metrics) to it.

    Returns:
        A tidy table, one row per class plus a ``mean`` row: dataset, class, images,
        anomalous, image_auroc, image_ap, pixel_auroc, pixel_aupro (percent).
    """
    meta = meta if isinstance(meta, Meta) else load_meta(meta)
    name = dataset_name or meta.root.name
    sigma = model.protocol.sigma if sigma is None else sigma
    rows = []
    for cls in classes or meta.classes(split):
        ds = AnomalyDataset(meta, model.image_size, split, [cls], mask_rule=model.mask_rule)
        got = ClassCollector(keep_maps=on_class is not None, pool_dtype=getattr(torch, map_dtype))
        host_dtype = "float32" if on_class is not None else map_dtype  # the callback gets float32 maps
        for item, scores, maps in stream_maps(model, ds, batch_size, sigma, device, precision, num_workers,
                                              host_dtype, progress, f"{name}/{cls}", timer):
            with timer.stage("metrics") if timer else nullcontext():
                got.add(item, scores, maps)
        with timer.stage("metrics") if timer else nullcontext():
            row = got.row(aupro_method)
        rows.append({"dataset": name, "class": cls, "images": len(ds),
                     "anomalous": int(np.concatenate(got.labels).sum()), **row})
        if on_class is not None:
            on_class(cls, got.predictions())
    table = pd.DataFrame(rows)
    mean = {"dataset": name, "class": "mean", "images": int(table["images"].sum()),
            "anomalous": int(table["anomalous"].sum()), **table[METRIC_COLUMNS].mean().to_dict()}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def evaluate_with(model: Detector, meta: Meta | str | Path, cfg: EvalConfig, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` with the settings of an :class:`EvalConfig`."""
    return evaluate(model, meta, batch_size=cfg.batch_size, sigma=cfg.sigma, aupro_method=cfg.aupro_method,
                    device=resolve_device(cfg.device), precision=cfg.precision, num_workers=cfg.workers,
                    map_dtype=cfg.map_dtype, **kwargs)


def localisation_quality(p: ClassPredictions, i: int, n_layers: int) -> float:
    """How well image i's map localises: pixel AUROC of its own map if anomalous, else 1 - peak / layers.

    A normal image's quality is low when its map rises anywhere (a false alarm).
    """
    return float(metrics.pixel_auroc(p.masks[i], p.maps[i]) if p.labels[i] else 1 - p.maps[i].max() / n_layers)
