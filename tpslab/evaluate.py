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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tpslab import metrics
from tpslab.configs import AUPRO_METHODS, EvalConfig  # noqa: F401 - re-exported here
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import Meta, load_meta
from tpslab.methods.base import Detector, Prediction
from tpslab.utils import TPSLabError, atomic_write_text, resolve_device

METRIC_COLUMNS = ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]


def default_sigma(image_size: int) -> float:
    """The smoothing of the maps: 4 px at 518 px, in proportion elsewhere."""
    return 4.0 * image_size / 518


def smooth_maps(maps: np.ndarray, image_size: int, sigma: float | None = None) -> np.ndarray:
    """Gaussian smoothing of (N, H, W) maps as evaluated: ``sigma`` px (None: :func:`default_sigma`; 0: none)."""
    sigma = default_sigma(image_size) if sigma is None else sigma
    return np.stack([gaussian_filter(x, sigma=sigma) for x in maps]) if sigma > 0 else maps


@dataclass
class ClassPredictions:
    """Everything predicted for one class (numpy arrays)."""

    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W), smoothed
    labels: np.ndarray  # (N,)
    masks: np.ndarray  # (N, H, W) in {0, 1}
    has_mask: np.ndarray  # (N,) bool
    paths: list[str]


def _predict_batches(model: Detector, dataset: AnomalyDataset | list[dict[str, Any]], batch_size: int,
                     device: str | torch.device, progress: bool,
                     desc: str) -> Iterator[tuple[dict[str, Any], Prediction]]:
    """(batch of items, prediction) pairs; a transductive method sees the whole set at once."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if not model.transductive:
        for item in tqdm(loader, desc=desc, disable=not progress, leave=False):
            yield item, model.predict(item["image"].to(device), list(item["cls_name"]))
        return
    items = list(tqdm(loader, desc=f"{desc} (load)", disable=not progress, leave=False))
    whole = {k: torch.cat([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
             else [v for it in items for v in it[k]] for k in items[0]}
    classes = sorted(set(whole["cls_name"]))
    if len(classes) != 1:
        raise TPSLabError(f"{model.method} scores one class at a time; got {', '.join(classes)}")
    yield whole, model.predict_set(whole["image"], classes[0], list(whole["specie_name"]))


@torch.no_grad()
def predict_dataset(model: Detector, dataset: AnomalyDataset | list[dict[str, Any]],
                    batch_size: int = EvalConfig.batch_size, sigma: float | None = None,
                    device: str | torch.device = "cpu", progress: bool = True,
                    desc: str = "predict") -> ClassPredictions:
    """Run a detector over a data set (or a list of its items) and smooth the maps.

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
    """
    model.eval().to(device)
    sigma = model.protocol.sigma if sigma is None else sigma
    scores, maps, labels, masks, has_mask, paths = [], [], [], [], [], []
    for item, pred in _predict_batches(model, dataset, batch_size, device, progress, desc):
        m = smooth_maps(pred.anomaly_maps.float().cpu().numpy(), model.image_size, sigma)  # (B, S, S)
        scores.append(pred.image_scores.cpu().numpy())
        maps.append(m.astype(np.float32))
        labels.append(item["label"].numpy())
        masks.append(item["mask"].numpy().astype(np.uint8))
        has_mask.append(item["has_mask"].numpy())
        paths += list(item["img_path"])
    return ClassPredictions(np.concatenate(scores), np.concatenate(maps), np.concatenate(labels),
                            np.concatenate(masks), np.concatenate(has_mask).astype(bool), paths)


def score_class(p: ClassPredictions, aupro_method: str = EvalConfig.aupro_method) -> dict[str, float]:
    """The four paper metrics of one class, in percent (NaN where undefined)."""
    keep = p.has_mask
    pixel = metrics.pixel_metrics(p.masks[keep], p.maps[keep], aupro_method) if keep.any() else {}  # one pass
    row = {
        "image_auroc": metrics.image_auroc(p.labels, p.scores),
        "image_ap": metrics.image_ap(p.labels, p.scores),
        "pixel_auroc": pixel.get("pixel_auroc", math.nan),
        "pixel_aupro": pixel.get("pixel_aupro", math.nan),
    }
    return {k: 100.0 * v for k, v in row.items()}


def evaluate(model: Detector, meta: Meta | str | Path, split: str = "test", classes: list[str] | None = None,
             dataset_name: str | None = None, batch_size: int = EvalConfig.batch_size, sigma: float | None = None,
             aupro_method: str = EvalConfig.aupro_method, device: str | torch.device = "cpu", progress: bool = True,
             on_class: Callable[[str, ClassPredictions], None] | None = None) -> pd.DataFrame:
    """Evaluate ``model`` on each class of a data set.

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
        on_class: called with each class's name and predictions (e.g. to pick examples).

    Returns:
        A tidy table, one row per class plus a ``mean`` row: dataset, class, images,
        anomalous, image_auroc, image_ap, pixel_auroc, pixel_aupro (percent).
    """
    meta = meta if isinstance(meta, Meta) else load_meta(meta)
    name = dataset_name or meta.root.name
    rows = []
    for cls in classes or meta.classes(split):
        ds = AnomalyDataset(meta, model.image_size, split, [cls])
        p = predict_dataset(model, ds, batch_size, sigma, device, progress, desc=f"{name}/{cls}")
        rows.append({"dataset": name, "class": cls, "images": len(ds), "anomalous": int(p.labels.sum()),
                     **score_class(p, aupro_method)})
        if on_class is not None:
            on_class(cls, p)
    table = pd.DataFrame(rows)
    mean = {"dataset": name, "class": "mean", "images": int(table["images"].sum()),
            "anomalous": int(table["anomalous"].sum()), **table[METRIC_COLUMNS].mean().to_dict()}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def evaluate_with(model: Detector, meta: Meta | str | Path, cfg: EvalConfig, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` with the settings of an :class:`EvalConfig`."""
    return evaluate(model, meta, batch_size=cfg.batch_size, sigma=cfg.sigma, aupro_method=cfg.aupro_method,
                    device=resolve_device(cfg.device), **kwargs)


def localisation_quality(p: ClassPredictions, i: int, n_layers: int) -> float:
    """How well image i's map localises: pixel AUROC of its own map if anomalous, else 1 - peak / layers.

    A normal image's quality is low when its map rises anywhere (a false alarm).
    """
    return float(metrics.pixel_auroc(p.masks[i], p.maps[i]) if p.labels[i] else 1 - p.maps[i].max() / n_layers)


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """A Markdown table (no extra dependency), metrics rounded to ``digits``."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i in range(len(table)):  # per column, so integer columns stay integers (iterrows would upcast)
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in (table[c].iloc[i] for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: str | Path, note: str | None = None, latex: bool = False) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` (and ``stem.tex``) atomically; ``note`` heads the Markdown and LaTeX."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    atomic_write_text(paths[0], table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(paths[1], (f"{note}\n\n" if note else "") + to_markdown(table))
    if latex:
        paths.append(stem.with_suffix(".tex"))
        atomic_write_text(paths[2], to_latex(table, note))
    return paths


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (no extra dependency); floats with one decimal, ``caption`` as a comment."""
    def cell(v: Any) -> str:
        text = f"{v:.1f}" if isinstance(v, float) else str(v)
        return re.sub(r"([&%_#$])", r"\\\1", text)
    lines = [f"% {caption}" if caption else "%", "\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\toprule",
             " & ".join(cell(c) for c in table.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in table.itertuples(index=False)]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"
