"""Per-class evaluation: image AUROC/AP, pixel AUROC/AUPRO, as in the paper's tables.

Maps are smoothed with a Gaussian of sigma 4 px at 518 px (the authors' setting), scaled
in proportion for other image sizes. Figures are percentages; the data set figure is the
mean over classes. Anomalous images without a mask count for image metrics only.

Unlike the authors' test script, classes of 2000+ images are not averaged over chunks
of 100 images (their last chunk is scored with the masks in place of the predictions,
which inflates those numbers); every class is scored whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tpslab import metrics
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import Meta, load_meta
from tpslab.model import TPS
from tpslab.utils import atomic_write_text

METRIC_COLUMNS = ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]


def default_sigma(image_size: int) -> float:
    """4 px at 518 px, in proportion elsewhere."""
    return 4.0 * image_size / 518


@dataclass
class ClassPredictions:
    """Everything predicted for one class (numpy arrays)."""

    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W), smoothed
    labels: np.ndarray  # (N,)
    masks: np.ndarray  # (N, H, W) in {0, 1}
    has_mask: np.ndarray  # (N,) bool
    paths: list[str]


@torch.no_grad()
def predict_dataset(model: TPS, dataset: AnomalyDataset, batch_size: int = 8, sigma: float | None = None,
                    device: str | torch.device = "cpu", progress: bool = True, desc: str = "predict") -> ClassPredictions:
    """Run ``model`` over a dataset; smooth the maps (sigma 0 or None-> default, <0 -> none)."""
    sigma = default_sigma(dataset.image_size) if sigma is None else sigma
    model.eval().to(device)
    scores, maps, labels, masks, has_mask, paths = [], [], [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for item in tqdm(loader, desc=desc, disable=not progress, leave=False):
        pred = model.predict(item["image"].to(device))
        m = pred.anomaly_maps.float().cpu().numpy()
        if sigma > 0:
            m = np.stack([gaussian_filter(x, sigma=sigma) for x in m])
        scores.append(pred.image_scores.cpu().numpy())
        maps.append(m.astype(np.float32))
        labels.append(item["label"].numpy())
        masks.append(item["mask"].numpy().astype(np.uint8))
        has_mask.append(item["has_mask"].numpy())
        paths += list(item["img_path"])
    return ClassPredictions(np.concatenate(scores), np.concatenate(maps), np.concatenate(labels),
                            np.concatenate(masks), np.concatenate(has_mask).astype(bool), paths)


def score_class(p: ClassPredictions, aupro_method: str = "exact") -> dict[str, float]:
    """The four paper metrics of one class, in percent (NaN where undefined)."""
    keep = p.has_mask
    row = {
        "image_auroc": metrics.image_auroc(p.labels, p.scores),
        "image_ap": metrics.image_ap(p.labels, p.scores),
        "pixel_auroc": metrics.pixel_auroc(p.masks[keep], p.maps[keep]) if keep.any() else math.nan,
        "pixel_aupro": metrics.aupro(p.masks[keep], p.maps[keep], method=aupro_method) if keep.any() else math.nan,
    }
    return {k: 100.0 * v for k, v in row.items()}


def evaluate(model: TPS, meta: Meta | str | Path, split: str = "test", classes: list[str] | None = None,
             dataset_name: str | None = None, batch_size: int = 8, sigma: float | None = None,
             aupro_method: str = "exact", device: str | torch.device = "cpu", progress: bool = True) -> pd.DataFrame:
    """Evaluate ``model`` on each class of a data set.

    Returns:
        A tidy table, one row per class plus a ``mean`` row: dataset, class, images,
        anomalous, image_auroc, image_ap, pixel_auroc, pixel_aupro (percent).
    """
    meta = meta if isinstance(meta, Meta) else load_meta(meta)
    name = dataset_name or meta.root.name
    rows = []
    for cls in classes or meta.classes(split):
        ds = AnomalyDataset(meta, model.backbone.image_size, split, [cls])
        p = predict_dataset(model, ds, batch_size, sigma, device, progress, desc=f"{name}/{cls}")
        rows.append({"dataset": name, "class": cls, "images": len(ds), "anomalous": int(p.labels.sum()),
                     **score_class(p, aupro_method)})
    table = pd.DataFrame(rows)
    mean = {"dataset": name, "class": "mean", "images": int(table["images"].sum()),
            "anomalous": int(table["anomalous"].sum()), **table[METRIC_COLUMNS].mean().to_dict()}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """A Markdown table (no extra dependency), metrics rounded to ``digits``."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i in range(len(table)):  # per column, so integer columns stay integers (iterrows would upcast)
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in (table[c].iloc[i] for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: str | Path, note: str | None = None) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` atomically; ``note`` heads the Markdown."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(md_path, (f"{note}\n\n" if note else "") + to_markdown(table))
    return [csv_path, md_path]
