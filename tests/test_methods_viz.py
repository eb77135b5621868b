"""The baseline notebook's figures (DPAM attention, MuSc mutual scores) draw and summarise correctly."""

from __future__ import annotations

import numpy as np
import torch

from tpslab.backbone.core import build_backbone
from tpslab.methods.anomalyclip import attention_weights
from tpslab.methods.musc_ops import lnamd, msm, nearest_distances
from tpslab.viz.baselines import attention_summary, plot_attention, plot_mutual_scores


def test_attention_figure_and_summary(images):
    bb = build_backbone("tpslab-tiny", None, seed=0)
    att = attention_weights(bb, images, block=2)
    summary = attention_summary(att, patch=9)
    assert set(summary) == {f"{k}_{m}" for k in ("qk", "vv") for m in ("self", "cls", "entropy")}
    assert summary["qk_self"] == round(float(att["qk"][0, 10, 10]), 4)
    assert 0 < summary["vv_entropy"] <= np.log(65) + 1e-4
    fig = plot_attention(images[0], att, patch=9, block=2, mean_std=bb.mean_std, label="random weights")
    assert len(fig.axes) == 5  # three panels, two colour bars


def test_mutual_score_figure():
    tokens = torch.randn(6, 16, 8, generator=torch.Generator().manual_seed(0))
    z = lnamd(tokens, 1)
    d = nearest_distances(z, [2])[0]  # (L, N)
    assert d.shape == (16, 6) and torch.isinf(d[:, 2]).all()
    scores = msm(z)[2]  # (L,)
    mask = np.zeros((64, 64))
    mask[10:20, 10:20] = 1
    fig = plot_mutual_scores(torch.zeros(3, 64, 64), d, scores, mask, ((0.5,) * 3, (0.5,) * 3))
    assert len(fig.axes) == 5
