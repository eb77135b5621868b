"""tpslab.methods.tps.explain: the read-outs are the model's own maps; numbers and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tpslab
from tpslab.methods.tps.explain import explain, layer_summary, patch_table
from tpslab.utils import TPSLabError


def _trained_like(variant: str) -> tpslab.TPS:
    """A tiny model whose pathway is not the identity (random learnable parts, seeded)."""
    model = tpslab.build_model(seed=3, variant=variant)
    with torch.no_grad():
        for p in model.pathways.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def test_pathway_maps_are_the_models_own(images):
    """What notebook 05 used to check: explain's pathway read-out equals predict's per-layer maps."""
    model = _trained_like("paper")
    expl = explain(model, images)
    layer_probs = model.predict(images, return_layers=True).extras["layer_probs"]  # (B, 2, S, S) per layer
    k, b, g = expl.pathway_maps.shape[:3]
    assert (k, b, g) == (len(model.backbone.layers), images.shape[0], model.backbone.grid_size)
    for i, probs in enumerate(layer_probs):
        up = F.interpolate(expl.pathway_maps[i][:, None], size=images.shape[-1], mode="bilinear")[:, 0]
        assert torch.allclose(up, probs[:, 1], atol=1e-5)


def test_global_and_shunt_maps_match_a_direct_computation(images):
    model = _trained_like("paper")
    expl = explain(model, images)
    feats = model.encode_images(images)
    g_t, s_t = model.text_features()
    t, b, g = model.config.temperature, images.shape[0], model.backbone.grid_size
    for i, z in enumerate(feats.patches):
        z = F.normalize(z, dim=-1)
        for text, maps in ((g_t, expl.global_maps), (s_t, expl.shunt_maps)):
            p = (z @ F.normalize(text, dim=-1).T / t).softmax(-1)[..., 1].reshape(b, g, g)
            assert torch.allclose(p, maps[i], atol=1e-5)
    assert not torch.allclose(expl.shunt_maps, expl.pathway_maps, atol=1e-3)  # the pathway changes the read-out
    assert torch.allclose(expl.attention.flatten(3).sum(-1), torch.ones(1), atol=1e-4)  # attention sums to 1
    assert torch.allclose(expl.readout.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_authors_code_variant_shows_the_pathway_it_discards(images):
    model = _trained_like("authors-code")
    expl = explain(model, images)
    probs = model.predict(images, return_layers=True).extras["layer_probs"]
    up = F.interpolate(expl.shunt_maps[0][:, None], size=images.shape[-1], mode="bilinear")[:, 0]
    assert torch.allclose(up, probs[0][:, 1], atol=1e-5)  # it predicts with the plain shunt features
    assert not torch.allclose(expl.pathway_maps, expl.shunt_maps, atol=1e-3)


def test_explain_without_a_pathway_is_a_clear_error(images):
    with pytest.raises(TPSLabError, match="needs a model with a pathway"):
        explain(tpslab.build_model(prompts="fixed", pathway=False), images)


def test_layer_summary_and_patch_table(images):
    model = _trained_like("paper")
    expl = explain(model, images)
    masks = [np.zeros((64, 64), np.float32) for _ in range(4)]
    for j in (1, 3):
        masks[j][8:32, 8:32] = 1
    summary = layer_summary(expl, masks, model.backbone.layers)
    assert list(summary["layer"]) == list(model.backbone.layers)
    assert summary.filter(like="pixel_auroc").stack().between(0, 100).all()
    assert (summary["readout agreement"] <= 1 + 1e-6).all()
    table = patch_table(expl, masks, model.backbone.layers)
    g = model.backbone.grid_size
    assert len(table) == 3 * len(model.backbone.layers) * 4 * g * g
    assert set(table["patch"]) == {"defect", "normal"} and set(table["read-out"]) == {"global", "shunt",
                                                                                        "shunt + pathway"}
