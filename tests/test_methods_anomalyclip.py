"""tpslab.methods.anomalyclip: AnomalyCLIP on TPS's prompt learner, losses and DPAM features (docs/baselines.md#section-3)."""

from __future__ import annotations

import pytest
import torch

from tpslab.methods import build_method
from tpslab.methods.anomalyclip import AnomalyCLIP, AnomalyCLIPConfig
from tpslab.methods.authors import load_anomalyclip_checkpoint
from tpslab.methods.tps.model import upsample_probs
from tpslab.methods.tps.prompts import PromptLearner, learned_sentences
from tpslab.methods.train import batch_loss
from tpslab.utils import TPSLabError

TINY = dict(backbone="tpslab-tiny", pretrained=None, image_size=None)
W = 64  # tiny text width


@pytest.fixture(scope="module")
def model():
    return build_method("anomalyclip", **TINY)


def test_defaults_are_the_published_setting():
    c = AnomalyCLIPConfig()
    assert (c.backbone, c.pretrained, c.image_size) == ("ViT-L-14-336", "openai", 518)
    assert c.layers is None and c.layer_weight == 4.0 and c.image_embedding == "authors"
    assert (c.n_ctx, c.deep_depth, c.deep_length, c.fp16_deep_prompts) == (12, 9, 4, True)
    assert AnomalyCLIPConfig.from_dict(c.to_dict()) == c


def test_unknown_settings_are_rejected():
    with pytest.raises(TPSLabError, match="unknown anomalyclip setting"):
        build_method("anomalyclip", backbone="tpslab-tiny", variant="paper")
    with pytest.raises(TPSLabError, match="image_embedding"):
        AnomalyCLIPConfig(image_embedding="cls")


def test_structure(model):
    assert model.method == "anomalyclip" and model.trains and not model.transductive
    assert model.backbone.layers == (4,)  # block 24 of 24, scaled to the tiny model's 4 blocks
    assert model.prompts.sentences == [" ".join(["X"] * 12) + " object.", " ".join(["X"] * 12) + " damaged object."]
    assert model.prompts.ctx.shape == (2, 12, W)
    assert len(model.prompts.deep) == 3 and model.prompts.deep[0].shape == (4, W)  # depth 9 of 12 -> 3 of 4 layers
    assert len(model.prompts.unused_projections) == 3 and model.prompts.fp16_deep_prompts
    assert set(model.trainable_state_dict()) == {f"prompts.{k}" for k in model.prompts.state_dict()}
    assert model.protocol.sigma == pytest.approx(4 * 64 / 518)


def test_text_features_equal_a_tps_prompt_learner(model):
    """AnomalyCLIP's text features are TPS's PromptLearner with AnomalyCLIP's two sentences."""
    bb = model.backbone
    sentences = learned_sentences(("{}", "damaged {}"), "object", 12)
    learner = PromptLearner(bb, sentences, n_ctx=12, deep_layers=3, deep_length=4, fp16_deep_prompts=True)
    learner.load_state_dict({k: v for k, v in model.prompts.state_dict().items() if "unused" not in k})
    torch.testing.assert_close(model.text_features(), learner(bb))
    # and by hand: context at positions 1..12, deep prompts rounded to fp16, EOT feature @ text_projection
    emb = bb.embed_tokens(learner.tokens).clone()
    emb[:, 1:13] = model.prompts.ctx.detach()
    deep = [p.detach().half().float() for p in model.prompts.deep]
    torch.testing.assert_close(model.text_features(), bb.encode_text(emb, learner.tokens, deep))


def test_forward_features_and_predict(model, images):
    feats = model.encode_images(images)
    assert feats.embedding.shape == (4, 64) and len(feats.patches) == 1 and feats.patches[0].shape == (4, 64, 64)
    torch.testing.assert_close(feats.patches[0], model.backbone.encode_image_vv(images).patches[0])
    out = model.forward_features(feats)
    assert out.image_logits.shape == (4, 2) and out.patch_logits[0].shape == (4, 64, 2)
    pred = build_method("anomalyclip", **TINY).predict(images)  # class names are not needed
    assert pred.image_scores.shape == (4,) and pred.anomaly_maps.shape == (4, 64, 64)
    for x in (pred.image_scores, pred.anomaly_maps):
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(pred.image_scores, out.image_logits.softmax(-1)[:, 1])
    torch.testing.assert_close(pred.anomaly_maps, upsample_probs(out.patch_logits[0], 64)[:, 1])


def _loss(model, feats, masks, labels):
    """The loss the training loop minimises (tpslab.methods.train.batch_loss: tps_loss with the model's layer weight)."""
    return batch_loss(model, feats, masks, labels, torch.ones(len(labels), dtype=torch.bool)).total


def test_loss_weight_4_on_one_layer_equals_four_identical_layers(images):
    """The published runs: 4 identical block-24 terms (weight 1) = one block-24 term with weight 4."""
    one = build_method("anomalyclip", **TINY)  # layers (4,), layer_weight 4
    four = build_method("anomalyclip", **TINY, layers=(4, 4, 4, 4), layer_weight=1.0)
    masks = (torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    labels = torch.tensor([0, 1, 1, 0])
    f1, f4 = one.encode_images(images), four.encode_images(images)
    assert len(f4.patches) == 4
    l1, l4 = _loss(one, f1, masks, labels), _loss(four, f4, masks, labels)
    l1.backward()
    l4.backward()
    torch.testing.assert_close(l1, l4)
    for (name, p1), p4 in zip(one.prompts.named_parameters(), four.prompts.parameters()):
        if p1.requires_grad:  # deep prompts pass through fp16 (as the reference): equal to one fp16 rounding step
            tol = dict(atol=1e-4, rtol=2e-3) if name.startswith("deep") else {}
            torch.testing.assert_close(p1.grad, p4.grad, **tol)
    # weight 1 on one layer is a different loss (the weight matters)
    assert not torch.allclose(l1, _loss(build_method("anomalyclip", **TINY, layer_weight=1.0), f1, masks, labels))


def test_four_distinct_layers_option(images):
    m = build_method("anomalyclip", **TINY, layers=(1, 2, 3, 4), layer_weight=1.0)
    pred = m.predict(images)
    assert pred.anomaly_maps.max() <= 4 and pred.anomaly_maps.min() >= 0
    feats = m.encode_images(images)
    assert not torch.allclose(feats.patches[1], feats.patches[3], atol=1e-4)


def reference_state(seed: int, sentences: list[str], tokenizer, width: int = W, deep: int = 3) -> dict[str, torch.Tensor]:
    """A prompt-learner state in the reference's key layout, random values."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokenizer(sentences)  # (2, 77)
    state = {"ctx_pos": torch.randn(1, 1, 12, width, generator=g), "ctx_neg": torch.randn(1, 1, 12, width, generator=g),
             "token_prefix_pos": torch.zeros(1, 1, 1, width), "token_suffix_pos": torch.zeros(1, 1, 64, width),
             "token_prefix_neg": torch.zeros(1, 1, 1, width), "token_suffix_neg": torch.zeros(1, 1, 64, width),
             "tokenized_prompts_pos": tokens[:1].reshape(1, 1, -1), "tokenized_prompts_neg": tokens[1:].reshape(1, 1, -1)}
    for k in range(deep):
        state[f"compound_prompts_text.{k}"] = torch.randn(4, width, generator=g)
        state[f"compound_prompt_projections.{k}.weight"] = torch.randn(896, width, generator=g)
        state[f"compound_prompt_projections.{k}.bias"] = torch.randn(896, generator=g)
    return state


def test_reference_checkpoint_loads_and_predicts(tmp_path, images):
    m = build_method("anomalyclip", **TINY)
    path = tmp_path / "epoch_15.pth"
    theirs = reference_state(3, m.prompts.sentences, m.backbone.tokenize)
    torch.save({"prompt_learner": theirs}, path)
    before = m.predict(images)
    assert load_anomalyclip_checkpoint(m, path) is m
    torch.testing.assert_close(m.prompts.ctx[0], theirs["ctx_pos"][0, 0])
    torch.testing.assert_close(m.prompts.ctx[1], theirs["ctx_neg"][0, 0])
    torch.testing.assert_close(m.prompts.deep[2], theirs["compound_prompts_text.2"])
    torch.testing.assert_close(m.prompts.unused_projections[1].bias, theirs["compound_prompt_projections.1.bias"])
    after = m.predict(images)
    assert after.anomaly_maps.shape == (4, 64, 64) and torch.isfinite(after.image_scores).all()
    assert not torch.allclose(after.anomaly_maps, before.anomaly_maps)


def test_bad_reference_checkpoints_are_refused(tmp_path, model):
    other = reference_state(3, ["a photo of a normal bottle.", "a photo of an anomalous bottle."], model.backbone.tokenize)
    torch.save({"prompt_learner": other}, tmp_path / "other.pth")
    with pytest.raises(TPSLabError, match="tokenized_prompts_pos"):
        load_anomalyclip_checkpoint(model, tmp_path / "other.pth")
    big = reference_state(3, model.prompts.sentences, model.backbone.tokenize, width=768, deep=8)
    torch.save({"prompt_learner": big}, tmp_path / "vitl.pth")
    with pytest.raises(TPSLabError, match="another backbone"):
        load_anomalyclip_checkpoint(model, tmp_path / "vitl.pth")
    torch.save({"prompt_learner": {}, "class_learner": {}, "former": {}}, tmp_path / "tps.pth")
    with pytest.raises(TPSLabError, match="AnomalyCLIP's format"):
        load_anomalyclip_checkpoint(model, tmp_path / "tps.pth")
    with pytest.raises(TPSLabError, match="not found"):
        load_anomalyclip_checkpoint(model, tmp_path / "missing.pth")


def test_a_prebuilt_backbone_is_shared(images):
    clip = build_method("clip", **TINY)
    ac = AnomalyCLIP(AnomalyCLIPConfig(**TINY), backbone=clip.backbone)
    assert ac.backbone.clip is clip.backbone.clip and ac.backbone.layers == (4,)
    torch.testing.assert_close(ac.predict(images).anomaly_maps, build_method("anomalyclip", **TINY).predict(images).anomaly_maps)


def test_attention_weights_match_open_clip_and_the_vv_definition():
    """q-k weights equal nn.MultiheadAttention's own (averaged over heads); V-V rows are a softmax of v v^T."""
    from tpslab.backbone.core import build_backbone
    from tpslab.methods.anomalyclip import attention_weights

    bb = build_backbone("tpslab-ref24", None, seed=0, quick_gelu=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    att = attention_weights(bb, images, block=3)
    resblocks = bb.clip.visual.transformer.resblocks
    with torch.no_grad():
        h = resblocks[1](resblocks[0](bb.tokens(images)))
        u = resblocks[2].ln_1(h)
        _, theirs = resblocks[2].attn(u, u, u, need_weights=True, average_attn_weights=True)
        w = resblocks[2].attn.embed_dim
        v = u @ resblocks[2].attn.in_proj_weight[2 * w:].T + resblocks[2].attn.in_proj_bias[2 * w:]
        v = v.reshape(2, 65, 2, 64)  # (B, 1+L, heads, d_head): head_width 64, width 128
        vv = torch.stack([torch.softmax(v[:, :, i] @ v[:, :, i].transpose(1, 2) / 8.0, -1) for i in range(2)]).mean(0)
    torch.testing.assert_close(att["qk"], theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att["vv"], vv, atol=1e-5, rtol=1e-5)
    assert torch.allclose(att["vv"].sum(-1), torch.ones(2, 65))
