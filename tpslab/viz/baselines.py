"""Figures of the baseline notebook: tpslab-mini, WinCLIP's windows, DPAM, MuSc's mutual scores.

nbval does not compare images, so each figure has a numeric twin (``*_summary``).

**tpslab-mini** (:func:`plot_what_it_knows`): the learning curve of its pre-training, and how its
state score separates normal from anomalous images of classes it never saw.

**WinCLIP** (:func:`plot_windows`). For one image it shows, left to right, each scale's window
scores (one cell per window, at
its top-left patch), the map they aggregate to (per patch, the harmonic mean of the windows
covering it: :func:`tpslab.methods.winclip.harmonic_aggregation`), the image score as the
coarsest "scale", and the zero-shot map ``3 / (1/M_2x2 + 1/M_3x3 + 1/s_image)``
(:func:`tpslab.methods.winclip.harmonic_mean`). All score panels share one colour scale.

**AnomalyCLIP's DPAM** (:func:`plot_attention`): where one patch attends with CLIP's q-k
attention and with the V-V attention that DPAM uses instead, in the same block of the same image.

**MuSc** (:func:`plot_mutual_scores`): for one image, each patch's distance to the nearest
patch of every other image of its class, and the mutual score map that ranks them.
"""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tpslab.data.dataset import to_rgb  # noqa: E402
from tpslab.methods.base import Prediction  # noqa: E402
from tpslab.methods.winclip import WinCLIP  # noqa: E402
from tpslab.viz import outline  # noqa: E402


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
        score map below) and a column for the result (the zero-shot grid map above, the
        upsampled map over the image below).
    """
    pred = prediction if prediction is not None else explain_windows(detector, image, class_name)
    parts, g = pred.extras, detector.backbone.grid_size
    score = float(pred.image_scores[0])
    panels = [*parts["window_scores"].values(), *parts["scale_maps"].values(), parts["grid_map"]]
    vmin = min(min(float(p[0].min()) for p in panels), score)
    vmax = max(max(float(p[0].max()) for p in panels), score)
    kw = dict(cmap="viridis", vmin=vmin, vmax=vmax)
    scales = list(parts["window_scores"])
    fig, axes = plt.subplots(2, len(scales) + 2, figsize=(3.3 * (len(scales) + 2), 7.0), squeeze=False,
                             layout="constrained")  # room for the shared colour bar and two-line titles
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


# ----------------------------------------------------------------------------- AnomalyCLIP: q-k vs V-V attention


def attention_summary(att: dict[str, torch.Tensor], patch: int) -> dict[str, float]:
    """Numbers behind :func:`plot_attention` for the first image: how local each attention is.

    Returns:
        Per kind (``qk``, ``vv``): the weight the patch gives itself (``self``), to the class token
        (``cls``), and the entropy of its row in nats (low = concentrated).
    """
    out = {}
    for kind, a in att.items():
        row = a[0, 1 + patch]  # (1+L,)
        out[f"{kind}_self"] = float(row[1 + patch])
        out[f"{kind}_cls"] = float(row[0])
        out[f"{kind}_entropy"] = float(-(row * row.clamp_min(1e-12).log()).sum())
    return {k: round(v, 4) for k, v in out.items()}


def plot_attention(image: torch.Tensor, att: dict[str, torch.Tensor], patch: int, block: int,
                   mean_std: tuple, label: str | None = None) -> plt.Figure:
    """Where one patch attends in one block: CLIP's q-k attention beside DPAM's V-V attention.

    Args:
        image: (3, S, S), preprocessed (the first image of ``att``).
        att: :func:`tpslab.methods.anomalyclip.attention_weights`'s result.
        patch: the query patch (0-based, row-major on the g x g grid).
        block: the block (for the title).
        mean_std: the preprocessing's mean and std (``backbone.mean_std``).
        label: a line under the title (e.g. that the weights are random).
    """
    n = att["qk"].shape[-1] - 1
    g = int(round(n**0.5))
    rgb = to_rgb(image, *mean_std)
    cell = image.shape[-1] / g
    y, x = divmod(patch, g)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(rgb)
    axes[0].add_patch(plt.Rectangle((x * cell, y * cell), cell, cell, fill=False, edgecolor="red", linewidth=2))
    axes[0].set_title(f"input, query patch {patch} (red)", fontsize=9)
    for ax, kind, name in ((axes[1], "qk", "CLIP: softmax(q k^T)"), (axes[2], "vv", "DPAM: softmax(v v^T)")):
        row = att[kind][0, 1 + patch]  # (1+L,)
        im = ax.imshow(row[1:].reshape(g, g).cpu().numpy(), cmap="magma")
        ax.set_title(f"{name}, block {block}\nweight on CLS {float(row[0]):.3f}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    title = "Where one patch looks: q-k attention vs DPAM's V-V attention"
    fig.suptitle(f"{title}\n({label})" if label else title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- MuSc: mutual scoring


def plot_mutual_scores(image: torch.Tensor, distances: torch.Tensor, patch_scores: torch.Tensor, mask: np.ndarray,
                       mean_std: tuple, label: str | None = None) -> plt.Figure:
    """One image scored against the other images of its class (MuSc's MSM, one layer and degree).

    Args:
        image: (3, S, S), preprocessed.
        distances: (L, N) the image's patches' nearest distances to each image
            (:func:`tpslab.methods.musc_ops.nearest_distances` for this image; ``inf`` at its own column).
        patch_scores: (L,) its MSM scores for the same layer and degree (mean of the smallest 30 %).
        mask: (S, S) its ground-truth mask (all zero for a normal image).
        mean_std: the preprocessing's mean and std.
        label: a line under the title.
    """
    n_patches, n_images = distances.shape
    g = int(round(n_patches**0.5))
    d = distances.clone()
    d[torch.isinf(d)] = float("nan")  # the image itself
    order = torch.argsort(patch_scores, descending=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1.6, 1]})
    rgb = to_rgb(image, *mean_std)
    axes[0].imshow(rgb)
    outline(axes[0], mask)
    axes[0].set_title("input (defect outlined in red)", fontsize=9)
    im = axes[1].imshow(d[order].cpu().numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    axes[1].grid(False)
    axes[1].set_xlabel("other image j of the class")
    axes[1].set_ylabel("patch, most anomalous first")
    axes[1].set_title("distance to image j's nearest patch", fontsize=9)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    im = axes[2].imshow(patch_scores.reshape(g, g).cpu().numpy(), cmap="jet")
    axes[2].set_title(f"mutual score: mean of the smallest\n30 % of each row ({n_images - 1} other images)",
                      fontsize=9)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in (axes[0], axes[2]):
        ax.set_xticks([])
        ax.set_yticks([])
    title = "MuSc: each patch against the other images of its class"
    fig.suptitle(f"{title}\n({label})" if label else title, fontsize=10)
    return fig


def plot_what_it_knows(curve: list[dict[str, float]], per_class: list[tuple[str, np.ndarray, np.ndarray]],
                       label: str | None = None) -> plt.Figure:
    """What a pre-trained small CLIP knows: its learning curve, and its state scores on held-out images.

    Args:
        curve: rows of ``step``, ``pairs`` and the zero-shot numbers in percent (the weights' metadata,
            :func:`tpslab.backbone.pretrain.load_weights`).
        per_class: (class, labels, state scores) per held-out class
            (:func:`tpslab.backbone.pretrain.heldout_state_scores`).
        label: a line under the title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    names = {"class_accuracy": "class accuracy", "retrieval_r1": "caption retrieval R@1",
             "state_auroc_corpus": "normal/anomalous AUROC, corpus",
             "state_auroc_heldout": "normal/anomalous AUROC, held-out domain"}
    if curve:
        pairs = [row["pairs"] / 1000 for row in curve]
        for key, name in names.items():
            axes[0].plot(pairs, [row[key] for row in curve], marker=".", label=name)
        axes[0].legend(fontsize=7)
    axes[0].set_xlabel("image-caption pairs seen (thousands)")
    axes[0].set_ylabel("percent")
    axes[0].set_title("learning curve (measured while pre-training)", fontsize=9)
    rng = np.random.default_rng(0)  # horizontal jitter only
    for i, (_, labels, scores) in enumerate(per_class):
        for state, colour, shift in ((0, "tab:blue", -0.18), (1, "tab:red", 0.18)):
            y = scores[labels == state]
            axes[1].scatter(i + shift + rng.uniform(-0.08, 0.08, len(y)), y, s=6, color=colour, alpha=0.6,
                            label=("normal", "anomalous")[state] if i == 0 else None)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_xticks(range(len(per_class)), [c for c, _, _ in per_class], rotation=30, fontsize=8)
    axes[1].set_ylabel("cos(v, anomalous) - cos(v, normal)")
    axes[1].set_title("state score of held-out images (classes never seen in pre-training)", fontsize=9)
    axes[1].legend(fontsize=7)
    title = "tpslab-mini: what a small CLIP trained on generated captions knows"
    fig.suptitle(f"{title}\n({label})" if label else title, fontsize=10)
    fig.tight_layout()
    return fig
