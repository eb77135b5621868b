"""Figures: samples, anomaly-map examples, loss curves, metric bars, per-layer read-outs and attention.

Every figure is saved as PNG and PDF. Figures made from synthetic data or random weights
must say so; pass ``label`` (e.g. :data:`SYNTHETIC_LABEL`) and it is printed under the title.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tpslab.data.dataset import Examples  # noqa: E402
from tpslab.evaluation.evaluate import predict_dataset
from tpslab.utils import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from tpslab.methods.tps.explain import Explanation
    from tpslab.methods.tps.model import TPS

SYNTHETIC_LABEL = "synthetic data, tiny CLIP with random weights: not paper numbers"


def overlay(rgb: np.ndarray, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend an anomaly map (H, W) over an image (H, W, 3) uint8; returns uint8."""
    lo = float(amap.min()) if vmin is None else vmin
    hi = float(amap.max()) if vmax is None else vmax
    norm = np.clip((amap - lo) / max(hi - lo, 1e-8), 0, 1)
    heat = (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.float32)
    return ((1 - alpha) * rgb.astype(np.float32) + alpha * heat).round().astype(np.uint8)


def prediction_panel(rgb: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, score: float,
                     cmap: str = "jet") -> np.ndarray:
    """What ``tpslab predict`` writes per image: image | map overlay | colour bar, under a line with the score.

    Args:
        rgb: (H, W, 3) uint8, the image at its original size.
        amap: (H, W) anomaly map at the same size.
        vmin: the colour scale's low end (shared by all images of a run, so overlays compare).
        vmax: its high end.
        score: the image score, in [0, 1].
        cmap: the colour map.

    Returns:
        (H + header, 2 W + bar, 3) uint8.
    """
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    gap, bar_w = max(4, w // 50), max(10, w // 20)
    font_px = max(11, round(max(h, w) / 40))  # readable on a 2000 px image as on a 64 px one
    font = _font(font_px)
    header = font_px + 8

    def text_w(text: str) -> int:
        return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) + 1

    label_w = max(text_w(f"{vmax:.2f}"), text_w(f"{vmin:.2f}")) + 6
    title = f"score {score:.3f}  map {vmin:.2f}..{vmax:.2f}"
    width = max(2 * w + 2 * gap + bar_w + label_w, text_w(title) + 8)
    canvas = Image.new("RGB", (width, h + header), "white")
    canvas.paste(Image.fromarray(rgb), (0, header))
    canvas.paste(Image.fromarray(overlay(rgb, amap, vmin, vmax, cmap=cmap)), (w + gap, header))
    ramp = np.linspace(1, 0, h)[:, None].repeat(bar_w, axis=1)  # (H, bar) top = vmax
    bar = (matplotlib.colormaps[cmap](ramp)[..., :3] * 255).astype(np.uint8)
    x_bar = 2 * w + 2 * gap
    canvas.paste(Image.fromarray(bar), (x_bar, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black", font=font)
    draw.text((x_bar + bar_w + 3, header), f"{vmax:.2f}", fill="black", font=font)
    draw.text((x_bar + bar_w + 3, header + h - font_px - 1), f"{vmin:.2f}", fill="black", font=font)
    return np.asarray(canvas)


def _font(px: int) -> Any:
    """PIL's default font at ``px`` pixels (its fixed 11 px bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def outline(ax: plt.Axes, mask: np.ndarray, color: str = "red") -> None:
    """Draw the contour of a defect mask (H, W) on ``ax``: a coloured line on a white halo, visible on any defect.

    A normal image's empty mask draws nothing; a mask covering the whole image outlines its border.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if 0 < mask.sum() < mask.size:
        for c, lw in (("white", 2.6), (color, 1.2)):
            ax.contour(mask, levels=[0.5], colors=c, linewidths=lw)
    elif mask.all():
        h, w = mask.shape
        for c, lw in (("white", 2.6), (color, 1.2)):
            ax.plot([-0.5, w - 0.5, w - 0.5, -0.5, -0.5], [-0.5, -0.5, h - 0.5, h - 0.5, -0.5], color=c, lw=lw)


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


def _title(ax_or_fig: plt.Axes | plt.Figure, title: str, label: str | None) -> None:
    """Set the title, with the label (what the numbers are) on a line of its own."""
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
    ax.legend(title="term", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # beside the curves
    _title(ax, "Training loss (image CE + focal and Dice per layer)", label)
    return fig


def plot_examples(images: list[np.ndarray], maps: list[np.ndarray], masks: list[np.ndarray],
                  captions: list[str], title: str, label: str | None = None) -> plt.Figure:
    """Rows of (image, ground truth, map overlay) for a few samples."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n + 1.2, 5.4), squeeze=False, layout="constrained")
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
        axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=8)
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(vmin, vmax), cmap="jet")
    fig.colorbar(scale, ax=list(axes[2]), shrink=0.9, pad=0.02).set_label("map (shared scale)", fontsize=7)
    _title(fig, title, label)  # constrained layout puts the title right above the panels: no blank band
    return fig


def plot_metric_bars(table: pd.DataFrame, x: str, hue: str, metrics: list[str], title: str,
                     label: str | None = None) -> plt.Figure:
    """Grouped bars: one panel per metric, bars by ``x`` coloured by ``hue`` (percent)."""
    long = table.melt(id_vars=[x, hue], value_vars=metrics, var_name="metric", value_name="percent")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        sns.barplot(data=long[long.metric == metric], x=x, y="percent", hue=hue, ax=ax)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(0, 100)
        if "auroc" in metric:  # 50 is chance for an AUROC only (not for AP or AUPRO)
            ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.tick_params(axis="x", labelrotation=45)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title=hue, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _title(fig, title, label)
    fig.tight_layout()
    return fig


def example_figure(model: TPS, examples: Examples, title: str, label: str | None = None,
                   notes: Sequence[str] | None = None, device: str | torch.device = "cpu") -> plt.Figure:
    """Image, ground truth and smoothed anomaly map (as evaluated) of a few examples.

    Args:
        model: the model whose maps are shown.
        examples: the images (e.g. from :func:`tpslab.data.dataset.load_examples`).
        title: the figure's title.
        label: what the numbers are (printed under the title).
        notes: one more caption line per example (e.g. its localisation quality).
        device: where the model runs.
    """
    p = predict_dataset(model, examples.items, len(examples.items), None, device, progress=False)
    captions = [f"{c}\n{'anomalous' if y else 'normal'}, score {s:.2f}" + (f"\n{notes[j]}" if notes else "")
                for j, (c, y, s) in enumerate(zip(examples.classes, p.labels, p.scores, strict=True))]
    return plot_examples(examples.rgb, list(p.maps), list(p.masks), captions, title, label)


def plot_samples(examples: Examples, title: str, label: str | None) -> plt.Figure:
    """Sample images (defects outlined in red) above their masks."""
    n, rgb, masks = len(examples.items), examples.rgb, examples.masks
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.6), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(rgb[j])
        outline(axes[0, j], masks[j])
        state = "anomalous" if examples.labels[j] else "normal"
        axes[0, j].set_title(f"{examples.classes[j]}\n{state}", fontsize=7)
        axes[1, j].imshow(masks[j], cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    _title(fig, title, label)
    return fig


def _heat(rgb: np.ndarray, grid: torch.Tensor, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """A (g, g) patch map upsampled (bilinear) and laid over the image."""
    up = F.interpolate(grid[None, None].float(), size=rgb.shape[:2], mode="bilinear")[0, 0].numpy()  # (H, W)
    return overlay(rgb, up, lo, hi)


def plot_layers(examples: Examples, expl: Explanation, j: int, layers: tuple[int, ...],
                label: str | None) -> plt.Figure:
    """Example j: per layer (rows) the three read-outs (P(anomalous), 0 to 1) and the two tokens' attention."""
    rgb, mask = examples.rgb[j], examples.masks[j]
    cols = [("global prompts", expl.global_maps, 0, 1), ("shunt prompts", expl.shunt_maps, 0, 1),
            ("shunt + pathway", expl.pathway_maps, 0, 1)]
    cols += [(f"attention,\n{w} token", expl.attention[:, :, c], None, None)
             for c, w in ((0, "normal"), (1, "anomalous"))]
    fig, axes = plt.subplots(len(layers), len(cols) + 1, figsize=(1.6 * (len(cols) + 1), 1.7 * len(layers) + 0.6),
                             squeeze=False)
    for r, layer in enumerate(layers):
        axes[r, 0].imshow(rgb)
        outline(axes[r, 0], mask)
        axes[r, 0].set_ylabel(f"layer {layer}", fontsize=8)
        for c, (name, maps, lo, hi) in enumerate(cols, start=1):
            axes[r, c].imshow(_heat(rgb, maps[r, j], lo, hi))
            axes[0, c].set_title(name, fontsize=8)
    axes[0, 0].set_title("image, defect\noutlined", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"What each read-out scores as anomalous, per layer\n({label})", fontsize=9)
    return fig


def plot_attention(examples: Examples, expl: Explanation, k: int, layer: int, label: str | None) -> plt.Figure:
    """Per example (columns): the image (defect outlined), then each shunt token's attention (layer index k)."""
    rgb, masks, n = examples.rgb, examples.masks, len(examples.items)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(rgb[j])
        outline(axes[0, j], masks[j])
        axes[0, j].set_title(examples.classes[j], fontsize=8)
        for token in (0, 1):
            axes[token + 1, j].imshow(_heat(rgb[j], expl.attention[k, j, token]))
    for r, name in enumerate(("image", "normal token", "anomalous token")):
        axes[r, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Where the pathway's shunt tokens look (MHA_eta, layer {layer})\n({label})", fontsize=9)
    return fig
