"""tpslab.methods.tps.model, prompts and pathway: shapes, the scores of Eq. 9-10, the two variants, ablations."""

from __future__ import annotations

import pytest
import torch

import tpslab
from tpslab.methods.tps import prompts
from tpslab.methods.tps.model import TPSConfig, anomaly_map, upsample_probs
from tpslab.methods.tps.pathway import Pathway
from tpslab.utils import TPSLabError


@pytest.fixture(scope="module")
def paper():
    return tpslab.build_model("tpslab-tiny", variant="paper", seed=0)


@pytest.fixture(scope="module")
def code():
    return tpslab.build_model("tpslab-tiny", variant="authors-code", seed=0)


def test_public_api_shapes_and_ranges(paper, images):
    out = paper.predict(images)
    assert out.image_scores.shape == (4,) and out.anomaly_maps.shape == (4, 64, 64)
    assert ((out.image_scores >= 0) & (out.image_scores <= 1)).all()
    n_layers = len(paper.backbone.layers)
    assert out.anomaly_maps.min() >= 0 and out.anomaly_maps.max() <= n_layers


def test_map_is_sum_of_anomalous_probabilities(paper, images):
    out = paper.predict(images, return_layers=True)
    probs = out.extras["layer_probs"]
    torch.testing.assert_close(out.anomaly_maps, sum(p[:, 1] for p in probs))
    torch.testing.assert_close(anomaly_map(probs), out.anomaly_maps)


def test_upsample_probs_softmax_then_bilinear():
    logits = torch.zeros(1, 4, 2)
    logits[0, 0, 1] = 10.0  # top-left patch anomalous
    up = upsample_probs(logits, 8)
    assert up.shape == (1, 2, 8, 8)
    torch.testing.assert_close(up.sum(1), torch.ones(1, 8, 8))
    assert up[0, 1, 0, 0] > 0.99 and up[0, 1, 7, 7] == pytest.approx(0.5)


def test_image_score_is_eq9(paper, images):
    feats = paper.encode_images(images)
    g, _ = paper.text_features()
    v = feats.embedding / feats.embedding.norm(dim=-1, keepdim=True)
    g = g / g.norm(dim=-1, keepdim=True)
    expected = ((v @ g.T) / 0.07).softmax(-1)[:, 1]
    torch.testing.assert_close(paper.predict(images).image_scores, expected)


def test_variants_differ_as_documented(paper, code):
    assert len(paper.pathways) == 4 and len(code.pathways) == 1
    assert paper.config.pathway_at_inference and not code.config.pathway_at_inference
    assert paper.config.image_embedding == "open_clip" and code.config.image_embedding == "authors"
    assert not paper.text_projection.requires_grad and code.text_projection.requires_grad
    assert code.global_prompts.fp16_deep_prompts and hasattr(code.global_prompts, "unused_projections")


def test_authors_code_discards_the_pathway_at_inference(code, images):
    """At test time their maps come from the plain shunt features: the pathway's weights do not matter."""
    before = code.predict(images).anomaly_maps
    with torch.no_grad():
        for p in code.pathways.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(code.predict(images).anomaly_maps, before)
    code.train()
    feats = code.encode_images(images)
    assert code.use_pathway()
    trained_view = code.forward_features(feats).patch_logits[0]
    code.eval()
    assert not torch.allclose(trained_view, code.forward_features(feats).patch_logits[0])


def test_paper_pathway_changes_the_maps(images):
    with_pw = tpslab.build_model(seed=0)
    without = tpslab.build_model(seed=0, pathway=False)
    assert not torch.allclose(with_pw.predict(images).anomaly_maps, without.predict(images).anomaly_maps)


def test_ablation_a1_uses_fixed_words_and_no_pathway():
    a1 = tpslab.build_model(prompts="fixed", pathway=False)
    assert a1.global_prompts.sentences == ["a photo of a normal object with all parts flawless.",
                                           "a photo of a anomalous object with damaged parts."]
    assert a1.shunt_prompts.sentences == ["a photo of the flawless part.", "a photo of the damaged part."]
    assert a1.global_prompts.ctx is None and len(a1.pathways) == 0


def test_learned_sentences_follow_the_paper():
    assert prompts.learned_sentences(prompts.GLOBAL_STATES, "object", 2) == ["X X object with all parts flawless.",
                                                                 "X X object with damaged parts."]
    assert prompts.deep_prompt_layers(12) == 8


def test_only_prompts_and_pathways_are_trainable(paper):
    names = [n for n, p in paper.named_parameters() if p.requires_grad]
    assert names and not any(n.startswith("backbone.") for n in names)
    assert all(not k.startswith("backbone.") for k in paper.trainable_state_dict())


def test_same_seed_same_model_and_outputs(images):
    a, b = tpslab.build_model(seed=5), tpslab.build_model(seed=5)
    torch.testing.assert_close(a.predict(images).anomaly_maps, b.predict(images).anomaly_maps, rtol=0, atol=0)
    c = tpslab.build_model(seed=6)
    assert not torch.allclose(a.predict(images).anomaly_maps, c.predict(images).anomaly_maps)


def test_pathway_attention_shapes():
    pw = Pathway(16, heads=8)
    s, att = pw(torch.randn(3, 2, 16), torch.randn(3, 2, 16), torch.randn(3, 10, 16), return_attention=True)
    assert s.shape == (3, 2, 16) and att.shape == (3, 2, 10)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 2))


def test_config_round_trip_and_bad_settings():
    cfg = TPSConfig(variant="authors-code", layers=(1, 3))
    assert TPSConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TPSLabError, match="variant"):
        TPSConfig(variant="mine")
    with pytest.raises(TPSLabError, match="unknown model setting"):
        TPSConfig.from_dict({"backbone": "tpslab-tiny", "epochs": 3})
    with pytest.raises(TPSLabError, match="out of range"):
        tpslab.build_model(layers=(1, 9))


def test_preprocess_follows_the_paper(paper):
    from PIL import Image

    img = Image.new("RGB", (100, 50), (255, 0, 0))
    x = paper.preprocess(img)
    assert x.shape == (3, 64, 64)  # resized to a square, aspect ratio not kept
    assert x[0].mean() > 1.5 and x[1].mean() < -1.5  # OpenAI mean/std
