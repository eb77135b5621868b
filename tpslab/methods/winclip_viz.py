"""The WinCLIP figure of the baseline notebook: window scores per scale and their harmonic mean.

For one image it shows, left to right, each scale's window scores (one cell per window, at
its top-left patch), the map they aggregate to (per patch, the harmonic mean of the windows
covering it: :func:`tpslab.methods.winclip.harmonic_aggregation`), the image score as the
coarsest "scale", and the zero-shot map ``3 / (1/M_2x2 + 1/M_3x3 + 1/s_image)``
(:func:`tpslab.methods.winclip.harmonic_mean`). All score panels share one colour scale.

nbval does not compare images, so :func:`window_summary` gives the same content as numbers.
"""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tpslab.methods.winclip import WinCLIP  # noqa: E402
from tpslab.model import Prediction  # noqa: E402
from tpslab.viz import to_rgb  # noqa: E402


def explain_windows(detector: WinCLIP, image: torch.Tensor, class_name: str) -> Prediction:
    """WinCLIP's prediction for one image, with its parts (``predict(..., return_parts=True)``).

    Args:
        detector: a WinCLIP detector.
        image: (3, S, S), preprocessed with ``detector.preprocess``.
        class_name: the image's class folder name.
    """
    return detector.predict(image[None], [class_name], return_parts=True)


def window_summary(prediction: Prediction) -> dict[str, float]:
    """Rounded numbers behind the figure (for a notebook's checked output): first image only.

    Returns:
        ``image_score``; per scale k, ``windows_kxk_min/max`` and ``map_kxk_min/max``;
        ``zero_shot_min/max`` of the grid map.
    """
    parts = prediction.extras
    out = {"image_score": float(prediction.image_scores[0])}
    for k, scores in parts["window_scores"].items():
        out[f"windows_{k}x{k}_min"], out[f"windows_{k}x{k}_max"] = float(scores[0].min()), float(scores[0].max())
        out[f"map_{k}x{k}_min"] = float(parts["scale_maps"][k][0].min())
        out[f"map_{k}x{k}_max"] = float(parts["scale_maps"][k][0].max())
    out["zero_shot_min"], out["zero_shot_max"] = float(parts["grid_map"][0].min()), float(parts["grid_map"][0].max())
    return {key: round(value, 4) for key, value in out.items()}


def plot_windows(detector: WinCLIP, image: torch.Tensor, class_name: str,
                 prediction: Prediction | None = None, label: str | None = None) -> plt.Figure:
    """Window scores at each scale and how the harmonic mean combines them, for one image.

    Args:
        detector: a WinCLIP detector.
        image: (3, S, S), preprocessed.
        class_name: the image's class folder name.
        prediction: :func:`explain_windows`'s result, if already computed.
        label: a line under the title (e.g. that the weights are random).

    Returns:
        The figure: a column per scale (window scores above, drawn at the windows' centres;
        the scale's map below), a column for the whole image (the input above, its constant
        score map below) and a column for the result (the zero-shot grid map above, the upsampled map over the image below).
    """
    pred = prediction if prediction is not None else explain_windows(detector, image, class_name)
    parts, g = pred.extras, detector.backbone.grid_size
    score = float(pred.image_scores[0])
    panels = [*parts["window_scores"].values(), *parts["scale_maps"].values(), parts["grid_map"]]
    vmin = min(min(float(p[0].min()) for p in panels), score)
    vmax = max(max(float(p[0].max()) for p in panels), score)
    kw = dict(cmap="viridis", vmin=vmin, vmax=vmax)
    scales = list(parts["window_scores"])
    fig, axes = plt.subplots(2, len(scales) + 2, figsize=(3.3 * (len(scales) + 2), 6.6), squeeze=False)
    for col, k in enumerate(scales):
        n = g - k + 1  # windows per side (stride 1)
        windows = parts["window_scores"][k][0].reshape(n, n).cpu().numpy()  # (n, n), row-major by top-left patch
        half = (k - 1) / 2  # each window's score drawn at the window's centre on the g x g grid
        axes[0, col].imshow(windows, extent=(half - 0.5, g - 0.5 - half, g - 0.5 - half, half - 0.5), **kw)
        axes[0, col].set_xlim(-0.5, g - 0.5)
        axes[0, col].set_ylim(g - 0.5, -0.5)
        axes[0, col].set_title(f"{n * n} windows of {k}x{k}:\ns(w) at each window's centre", fontsize=9)
        axes[1, col].imshow(parts["scale_maps"][k][0].cpu().numpy(), **kw)
        axes[1, col].set_title(f"M_{k}x{k}: harmonic mean of\nthe windows covering a patch", fontsize=9)
    col = len(scales)
    rgb = to_rgb(image, *detector.backbone.mean_std)
    axes[0, col].imshow(rgb)
    axes[0, col].set_title(f"input ({class_name})", fontsize=9)
    axes[1, col].imshow(torch.full((g, g), score).numpy(), **kw)
    axes[1, col].set_title(f"whole image: s = {score:.4f}\n(the coarsest scale)", fontsize=9)
    n_maps = len(scales) + 1
    terms = " + ".join([f"1/M_{k}x{k}" for k in scales] + ["1/s"])
    im = axes[0, col + 1].imshow(parts["grid_map"][0].cpu().numpy(), **kw)
    axes[0, col + 1].set_title(f"zero-shot map ({g}x{g})\n= {n_maps} / ({terms})", fontsize=9)
    size = image.shape[-1]
    axes[1, col + 1].imshow(rgb)
    axes[1, col + 1].imshow(pred.anomaly_maps[0].cpu().numpy(), alpha=0.5, **kw)
    axes[1, col + 1].set_title(f"bilinear to {size} px, no smoothing", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="P(anomalous)")
    fig.suptitle(f"WinCLIP, zero-shot: window scores and their harmonic means\n({label})" if label
                 else "WinCLIP, zero-shot: window scores and their harmonic means", fontsize=10)
    return fig
