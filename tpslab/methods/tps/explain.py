"""What a trained TPS looks at: per layer, three read-outs of every patch and the pathway's attention.

For every selected layer, :func:`explain` takes from one :meth:`tpslab.methods.tps.model.TPS.forward_features`
call the probability of "anomalous" of every patch against three pairs of text features:

* the **global** prompts (made for the whole image),
* the **plain shunt** prompts (a fixed read-out: the same two vectors for every image),
* the **shunt prompts customised by the pathway** (what TPS uses: built from the image's patches),

and the attention of the pathway's two shunt tokens over the patches (``MHA_eta``).
:func:`layer_summary` and :func:`patch_table` turn these into numbers; ``tpslab.viz``
draws them (``plot_layers``, ``plot_attention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from tpslab import metrics
from tpslab.methods.tps.model import TPS
from tpslab.utils import TPSLabError

READOUTS = {"global": "global", "shunt": "shunt", "shunt + pathway": "pathway"}  # table name -> map name


@dataclass
class Explanation:
    """Per selected layer k, for a batch: P(anomalous) per patch and the pathway's attention.

    Attributes:
        global_maps: (K, B, g, g) read out with the global (classification) prompts.
        shunt_maps: (K, B, g, g) with the plain shunt prompts: a fixed read-out, the same for every image.
        pathway_maps: (K, B, g, g) with the shunt prompts customised to the image by the pathway.
        attention: (K, B, 2, g, g) MHA_eta's attention of the normal / anomalous shunt token over the patches.
        readout: (K, B, D) per-image read-out direction s_a - s_n after the pathway (unit length).
    """

    global_maps: torch.Tensor
    shunt_maps: torch.Tensor
    pathway_maps: torch.Tensor
    attention: torch.Tensor
    readout: torch.Tensor


@torch.no_grad()
def explain(model: TPS, images: torch.Tensor) -> Explanation:
    """Global, plain-shunt and pathway read-outs of every selected layer, and the pathway's attention.

    The pathway is applied whatever the variant (the authors'-code variant discards it when
    predicting; here its customised read-out is shown all the same).

    Args:
        model: a TPS model with a pathway.
        images: (B, 3, S, S) preprocessed images.

    Raises:
        TPSLabError: the model has no pathway (``pathway=False``, ablation A1).
    """
    if not model.pathways:
        raise TPSLabError("explain needs a model with a pathway; this one has none (pathway=False, ablation A1)")
    model.eval()
    feats = model.encode_images(images.to(next(model.parameters()).device))
    out = model.forward_features(feats, return_attention=True, return_readouts=True, use_pathway=True)
    b, g = images.shape[0], model.backbone.grid_size

    def maps(logits: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([x.softmax(-1)[..., 1].reshape(b, g, g) for x in logits]).cpu()  # (K, B, g, g)

    attention = torch.stack([a.reshape(b, 2, g, g) for a in out.attention]).cpu()  # (K, B, 2, g, g)
    readout = torch.stack([F.normalize(s[:, 1] - s[:, 0], dim=-1) for s in out.shunt_features]).cpu()  # (K, B, D)
    return Explanation(maps(out.global_logits), maps(out.plain_logits), maps(out.patch_logits), attention, readout)


def _mask_grid(masks: list[np.ndarray], g: int) -> torch.Tensor:
    """(B, g, g): the share of each patch that the (S, S) masks cover."""
    return F.adaptive_avg_pool2d(torch.from_numpy(np.stack(masks)).float()[:, None], g)[:, 0]


def layer_summary(expl: Explanation, masks: list[np.ndarray], layers: tuple[int, ...]) -> pd.DataFrame:
    """Per layer: pixel AUROC of the three read-outs, attention lift on defects, read-out agreement.

    The *lift* of a token is the share of its attention on defect pixels divided by the
    defects' share of the image (1: no preference), averaged over the images with a defect;
    the *agreement* is the mean cosine between each image's read-out direction and their mean.
    """
    size, m = masks[0].shape[-1], np.stack(masks).astype(np.uint8)  # (B, S, S)
    grid = _mask_grid(masks, expl.attention.shape[-1])  # (B, g, g)
    bad = grid.flatten(1).sum(1) > 0
    rows = []
    for k, layer in enumerate(layers):
        up = {n: F.interpolate(getattr(expl, f"{n}_maps")[k][:, None], size=size, mode="bilinear")[:, 0].numpy()
              for n in ("global", "shunt", "pathway")}  # (B, S, S) each
        att = expl.attention[k]  # (B, 2, g, g), each token's attention sums to 1 over the patches
        lift = [float(((att[bad, j] * grid[bad]).flatten(1).sum(1) / grid[bad].flatten(1).mean(1)).mean())
                for j in (0, 1)]
        r = expl.readout[k]
        rows.append({"layer": layer, **{f"pixel_auroc {n}": 100 * metrics.pixel_auroc(m, up[n]) for n in up},
                     "attention lift normal": lift[0], "attention lift anomalous": lift[1],
                     "readout agreement": float((r @ F.normalize(r.mean(0), dim=0)).mean())})
    return pd.DataFrame(rows)


def patch_table(expl: Explanation, masks: list[np.ndarray], layers: tuple[int, ...]) -> pd.DataFrame:
    """Every patch's P(anomalous) per layer and read-out, with whether it is mostly defect."""
    defect = np.where(_mask_grid(masks, expl.attention.shape[-1]).flatten().numpy() > 0.5, "defect", "normal")
    return pd.concat([pd.DataFrame({"layer": layer, "read-out": name, "patch": defect,
                                    "P(anomalous)": getattr(expl, f"{attr}_maps")[k].flatten().numpy()})
                      for k, layer in enumerate(layers) for name, attr in READOUTS.items()])
