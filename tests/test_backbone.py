"""tpslab.backbone.core: patch tokens, image embeddings, the prompt-aware text encoder."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tpslab.backbone import features
from tpslab.backbone.core import (
    Backbone,
    SDPABlock,
    build_backbone,
    default_layers,
    load_clip,
    resize_position_grid,
)
from tpslab.utils import TPSLabError


@pytest.fixture(scope="module")
def bb():
    return build_backbone("tpslab-tiny", seed=0)


def test_default_layers_scale_the_papers_choice():
    assert default_layers(24) == (6, 12, 18, 24)
    assert default_layers(12) == (3, 6, 9, 12)
    assert default_layers(4) == (1, 2, 3, 4)


def test_image_features_shapes_and_projection(bb, images):
    f = bb.encode_image(images)
    assert f.embedding.shape == (4, 64)
    assert [p.shape for p in f.patches] == [(4, 64, 64)] * 4  # 8x8 patches of 64 px, D=64
    # patch tokens are ln_post + proj of the block outputs: check the last block by hand
    v = bb.clip.visual
    out = v.forward_intermediates(images, indices=[3], output_fmt="NLC", intermediates_only=True)
    expected = v.ln_post(out["image_intermediates"][0]) @ v.proj
    torch.testing.assert_close(f.patches[-1], expected)
    # open_clip's embedding is encode_image
    torch.testing.assert_close(f.embedding, bb.clip.encode_image(images))


def test_authors_embedding_skips_ln_post(bb, images):
    ours = bb.encode_image(images, "open_clip").embedding
    theirs = bb.encode_image(images, "authors").embedding
    v = bb.clip.visual
    out = v.forward_intermediates(images, indices=[3], output_fmt="NLC", output_extra_tokens=True, intermediates_only=True)
    torch.testing.assert_close(theirs, out["image_intermediates_prefix"][0][:, 0] @ v.proj)
    assert not torch.allclose(ours, theirs)


def test_vision_attention_through_sdpa_equals_open_clips(images):
    """The swapped blocks compute what nn.MultiheadAttention's own path does, with the same state dict."""
    clip = load_clip("tpslab-tiny", seed=0)
    with torch.no_grad():  # open_clip's blocks: PyTorch's native fast path (eval, no grad)
        expected = clip.visual(images)
    keys = list(clip.state_dict())
    bb = Backbone(clip, "tpslab-tiny")
    assert all(type(b) is SDPABlock for b in clip.visual.transformer.resblocks)
    assert not any(isinstance(b, SDPABlock) for b in clip.transformer.resblocks)  # text: masked, left as it is
    assert list(clip.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(bb.clip.visual(images), expected, atol=1e-5, rtol=1e-5)
    copy.deepcopy(bb)  # a swapped class is still a plain module: copies and pickles


def test_cpu_groups_change_no_feature(bb, images, monkeypatch):
    """A batch split into groups on the CPU (one image a call here) gives each image's own features."""
    whole = bb.encode_image(images), bb.encode_image_vv(images, start_block=2, out_blocks=(3, 4)), \
        bb.raw_blocks(images, (2, 4))
    monkeypatch.setattr(features, "CPU_TOKENS_PER_CALL", 1 + bb.grid_size ** 2)
    calls = []
    handle = bb.clip.visual.transformer.resblocks[0].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    grouped = bb.encode_image(images), bb.encode_image_vv(images, start_block=2, out_blocks=(3, 4)), \
        bb.raw_blocks(images, (2, 4))
    handle.remove()
    assert set(calls) == {1}  # every forward saw one image
    for a, b in zip(whole[:2], grouped[:2]):
        torch.testing.assert_close(b.embedding, a.embedding)
        for pa, pb in zip(a.patches, b.patches, strict=True):
            torch.testing.assert_close(pb, pa)
    torch.testing.assert_close(grouped[2][0], whole[2][0])
    for pa, pb in zip(whole[2][1], grouped[2][1], strict=True):
        torch.testing.assert_close(pb, pa)


def test_text_encoder_matches_open_clip_without_prompts(bb):
    tokens = bb.tokenize(["a photo of a damaged part.", "x x object with all parts flawless."])
    ours = bb.encode_text(bb.embed_tokens(tokens), tokens)
    torch.testing.assert_close(ours, bb.clip.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_deep_prompts_replace_positions_after_sot(bb):
    tokens = bb.tokenize(["x x x x x the damaged part."])
    emb = bb.embed_tokens(tokens)
    plain = bb.encode_text(emb, tokens)
    prompt = torch.randn(4, bb.text_width)
    deep = bb.encode_text(emb, tokens, [prompt])
    assert not torch.allclose(plain, deep)
    # replacing at layer 2 what layer 1 already put there is not a no-op, but the same prompt twice is deterministic
    torch.testing.assert_close(deep, bb.encode_text(emb, tokens, [prompt.clone()]))
    with pytest.raises(TPSLabError):
        bb.encode_text(emb, tokens, [prompt] * bb.num_text_layers)


def test_position_grid_resized_bilinear_without_antialias():
    clip = load_clip("tpslab-tiny", seed=0)
    before = clip.visual.positional_embedding.detach().clone()
    resize_position_grid(clip.visual, 96)
    after = clip.visual.positional_embedding
    assert after.shape == (1 + 12 * 12, 64) and clip.visual.grid_size == (12, 12)
    grid = before[1:].reshape(1, 8, 8, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(144, 64)
    torch.testing.assert_close(after[1:], expected)
    torch.testing.assert_close(after[:1], before[:1])
    bb = build_backbone("tpslab-tiny", image_size=96)
    assert bb.encode_image(torch.zeros(1, 3, 96, 96)).patches[0].shape == (1, 144, 64)


def test_clip_is_frozen_and_stays_in_eval(bb):
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.clip.training


def test_bad_backbone_inputs_are_one_line_errors(tmp_path, bb):
    with pytest.raises(TPSLabError, match="unknown backbone"):
        build_backbone("ViT-Nonexistent")
    with pytest.raises(TPSLabError, match="not found"):
        build_backbone("tpslab-tiny", pretrained=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TPSLabError, match="cannot load CLIP"):
        build_backbone("tpslab-tiny", pretrained=str(bad))
    with pytest.raises(TPSLabError, match="expects 64x64"):
        bb.encode_image(torch.zeros(1, 3, 32, 32))


def test_same_seed_same_random_weights():
    a, b = load_clip("tpslab-tiny", seed=3), load_clip("tpslab-tiny", seed=3)
    c = load_clip("tpslab-tiny", seed=4)
    assert torch.equal(a.visual.proj, b.visual.proj)
    assert not torch.equal(a.visual.proj, c.visual.proj)


def test_weights_from_a_file_and_from_local_dir(tmp_path, images):
    """The three ways weights arrive (tag, file, local-dir): file and local-dir work offline."""
    import json

    from tpslab.backbone.core import CONFIG_DIR

    source = load_clip("tpslab-tiny", seed=7)
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    from_file = build_backbone("tpslab-tiny", pretrained=str(tmp_path / "tiny.pt"), seed=0)
    torch.testing.assert_close(from_file.clip.visual.proj, source.visual.proj)
    folder = tmp_path / "tiny-dir"
    folder.mkdir()
    cfg = json.loads((CONFIG_DIR / "tpslab-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(source.state_dict(), folder / "open_clip_pytorch_model.bin")
    from_dir = build_backbone(f"local-dir:{folder}", seed=0)
    torch.testing.assert_close(from_dir.encode_image(images).embedding, from_file.encode_image(images).embedding)
