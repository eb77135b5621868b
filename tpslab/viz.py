"""Figures: anomaly-map overlays, loss curves, metric bars. Every figure is saved as PNG and PDF.

Figures made from synthetic data or random weights must say so; pass ``label`` (e.g.
:data:`SYNTHETIC_LABEL`) and it is printed under the title.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402

from tpslab.utils import atomic_path  # noqa: E402

SYNTHETIC_LABEL = "synthetic data, tiny CLIP with random weights: not paper numbers"


def to_rgb(image: torch.Tensor, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> np.ndarray:
    """A preprocessed (3, H, W) tensor back to an (H, W, 3) uint8 image."""
    x = image.detach().cpu().float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(rgb: np.ndarray, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend an anomaly map (H, W) over an image (H, W, 3) uint8; returns uint8."""
    lo = float(amap.min()) if vmin is None else vmin
    hi = float(amap.max()) if vmax is None else vmax
    norm = np.clip((amap - lo) / max(hi - lo, 1e-8), 0, 1)
    heat = (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.float32)
    return ((1 - alpha) * rgb.astype(np.float32) + alpha * heat).round().astype(np.uint8)


def save_figure(fig: plt.Figure, stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (atomically) and close it."""
    paths = []
    for fmt in formats:
        path = Path(stem).with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _title(ax_or_fig, title: str, label: str | None) -> None:
    text = f"{title}\n({label})" if label else title
    (ax_or_fig.suptitle if isinstance(ax_or_fig, plt.Figure) else ax_or_fig.set_title)(text, fontsize=10)


def plot_history(history: list[dict] | pd.DataFrame, label: str | None = None) -> plt.Figure:
    """Training losses per epoch (total, image, segmentation)."""
    df = pd.DataFrame(history)
    long = df.melt(id_vars="epoch", value_vars=[c for c in ("loss", "image_loss", "seg_loss") if c in df],
                   var_name="term", value_name="value")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=long, x="epoch", y="value", hue="term", marker="o", ax=ax)
    ax.set_ylabel("mean loss per batch")
    _title(ax, "Training loss (Eq. 11)", label)
    return fig


def plot_examples(images: list[np.ndarray], maps: list[np.ndarray], masks: list[np.ndarray],
                  captions: list[str], title: str, label: str | None = None) -> plt.Figure:
    """Rows of (image, ground truth, map overlay) for a few samples."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n + 0.6, 5.2), squeeze=False)
    vmax = max(float(m.max()) for m in maps)
    vmin = min(float(m.min()) for m in maps)
    for j in range(n):
        axes[0, j].imshow(images[j])
        axes[0, j].set_title(captions[j], fontsize=7)
        axes[1, j].imshow(masks[j], cmap="gray", vmin=0, vmax=1)
        axes[2, j].imshow(overlay(images[j], maps[j], vmin, vmax))
        for i in range(3):
            axes[i, j].axis("off")
    for i, name in enumerate(("image", "ground truth", "anomaly map")):
        axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    _title(fig, title, label)
    fig.tight_layout(rect=(0.02, 0, 1, 0.9))
    return fig


def plot_metric_bars(table: pd.DataFrame, x: str, hue: str, metrics: list[str], title: str,
                     label: str | None = None) -> plt.Figure:
    """Grouped bars: one panel per metric, bars by ``x`` coloured by ``hue`` (percent)."""
    long = table.melt(id_vars=[x, hue], value_vars=metrics, var_name="metric", value_name="percent")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(data=long[long.metric == metric], x=x, y="percent", hue=hue, ax=ax)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(0, 100)
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.tick_params(axis="x", labelrotation=45)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title=hue, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _title(fig, title, label)
    fig.tight_layout()
    return fig
