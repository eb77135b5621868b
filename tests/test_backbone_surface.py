"""The backbone pieces the baselines need, each against a slow, obviously-correct computation."""

from __future__ import annotations

import pytest
import torch

from tpslab.backbone.core import build_backbone
from tpslab.utils import TPSLabError


@pytest.fixture(scope="module")
def ref24():
    """The 24-block test architecture of docs/baselines.md#section-7, random weights, QuickGELU."""
    return build_backbone("tpslab-ref24", None, seed=0, quick_gelu=True)


def _run_blocks(visual, x, upto):
    """Block by block through the residual stream, keeping every output (the slow way)."""
    outs = []
    for block in visual.transformer.resblocks[:upto]:
        x = block(x)
        outs.append(x)
    return outs


def test_tokens_are_the_transformer_input(ref24, images):
    """tokens() + every block + ln_post/proj on the class token = open_clip's image embedding."""
    visual = ref24.clip.visual
    x = ref24.tokens(images)
    assert x.shape == (4, 1 + ref24.grid_size**2, 128)
    with torch.no_grad():
        last = _run_blocks(visual, x, ref24.num_blocks)[-1]
        emb = visual.ln_post(last[:, 0]) @ visual.proj
    torch.testing.assert_close(emb, ref24.clip.encode_image(images), atol=1e-5, rtol=1e-5)


def test_tokens_by_hand(ref24, images):
    """Patch k of the sequence is conv1 applied to the k-th 8x8 patch (row-major), plus its position."""
    visual = ref24.clip.visual
    with torch.no_grad():
        patch = images[:, :, 8:16, 16:24]  # row 1, column 2 of the 8x8 grid -> token 1 + 1*8 + 2
        emb = torch.einsum("bchw,ochw->bo", patch, visual.conv1.weight)
        expected = visual.ln_pre(torch.stack([visual.class_embedding.expand(4, -1) + visual.positional_embedding[0],
                                              emb + visual.positional_embedding[11]], dim=1))
    torch.testing.assert_close(ref24.tokens(images)[:, [0, 11]], expected, atol=1e-5, rtol=1e-5)


def test_raw_blocks_are_the_residual_stream(ref24, images):
    emb, raw = ref24.raw_blocks(images, (6, 12, 18, 24))
    with torch.no_grad():
        outs = _run_blocks(ref24.clip.visual, ref24.tokens(images), 24)
    assert len(raw) == 4 and raw[0].shape == (4, 64, 128)
    for block, tokens in zip((6, 12, 18, 24), raw):
        torch.testing.assert_close(tokens, outs[block - 1][:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb, ref24.clip.encode_image(images), atol=1e-5, rtol=1e-5)
    with pytest.raises(TPSLabError, match="out of range"):
        ref24.raw_blocks(images, (25,))


def test_encode_sentences_equals_open_clip(ref24):
    sentences = ["a photo of a normal bottle.", "a photo of an anomalous bottle."]
    ours = ref24.encode_sentences(sentences)
    with torch.no_grad():
        theirs = ref24.clip.encode_text(ref24.tokenize(sentences))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_quick_gelu_is_passed_through():
    gelu = build_backbone("tpslab-ref24", None, seed=0, quick_gelu=False)
    quick = build_backbone("tpslab-ref24", None, seed=0, quick_gelu=True)
    act = lambda bb: type(bb.clip.visual.transformer.resblocks[0].mlp.gelu).__name__  # noqa: E731
    assert act(gelu) == "GELU" and act(quick) == "QuickGELU"


def _vv_per_head(block, u):
    """AnomalyCLIP's V-V attention of one block, head by head with explicit matrices (the slow way)."""
    attn = block.attn
    w, heads = attn.embed_dim, attn.num_heads
    d = w // heads
    w_v, b_v = attn.in_proj_weight[2 * w:], attn.in_proj_bias[2 * w:]
    out = torch.zeros_like(u)
    for i in range(u.shape[0]):  # image
        v = u[i] @ w_v.T + b_v  # (T, W)
        heads_out = []
        for hd in range(heads):
            vh = v[:, hd * d:(hd + 1) * d]  # (T, d)
            a = torch.softmax(vh @ vh.T / d**0.5, dim=-1)  # (T, T)
            heads_out.append(a @ vh)
        out[i] = torch.cat(heads_out, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
    return out


def test_vv_stream_against_a_per_head_loop(ref24, images):
    """docs/baselines.md#section-3's closed form: z_6 = h_5 + VV(ln_1(h_5)); z_k = z_(k-1) + VV(ln_1(h_(k-1))), no MLP."""
    visual = ref24.clip.visual
    feats = ref24.encode_image_vv(images, out_blocks=(12, 24))  # start: block 6 of 24 by default
    with torch.no_grad():
        h = [ref24.tokens(images)] + _run_blocks(visual, ref24.tokens(images), 24)  # h[k] = output of block k
        z = h[5] + _vv_per_head(visual.transformer.resblocks[5], visual.transformer.resblocks[5].ln_1(h[5]))
        by_block = {6: z}
        for k in range(7, 25):
            block = visual.transformer.resblocks[k - 1]
            z = z + _vv_per_head(block, block.ln_1(h[k - 1]))
            by_block[k] = z
        expected = [visual.ln_post(by_block[k][:, 1:]) @ visual.proj for k in (12, 24)]
        authors_emb = h[24][:, 0] @ visual.proj  # no ln_post
    assert len(feats.patches) == 2 and feats.patches[1].shape == (4, 64, 64)
    for ours, theirs in zip(feats.patches, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.embedding, authors_emb, atol=1e-5, rtol=1e-5)
    open_clip_emb = ref24.encode_image_vv(images, embedding="open_clip").embedding
    torch.testing.assert_close(open_clip_emb, ref24.clip.encode_image(images), atol=1e-5, rtol=1e-5)
    # the V-V stream differs from CLIP's own tokens of the same block
    assert not torch.allclose(feats.patches[1], ref24.encode_image(images).patches[-1], atol=1e-3)


def test_vv_blocks_before_the_start_are_clip_tokens(ref24, images):
    """An out block before start_block gives the q-k stream; start_block moves where z begins."""
    before = ref24.encode_image_vv(images, start_block=13, out_blocks=(6, 12, 13))
    clip_tokens = ref24.encode_image(images).patches  # blocks 6, 12, 18, 24
    torch.testing.assert_close(before.patches[0], clip_tokens[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(before.patches[1], clip_tokens[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before.patches[2], ref24.encode_image_vv(images, out_blocks=(13,)).patches[0], atol=1e-3)
    with pytest.raises(TPSLabError, match="out of range"):
        ref24.encode_image_vv(images, out_blocks=(25,))
    with pytest.raises(TPSLabError, match="embedding"):
        ref24.encode_image_vv(images, embedding="nope")


def test_vv_start_is_scaled_to_the_depth(images):
    """On the 4-block tiny model the stream starts at block 1 (6 of 24 scaled) and ends at block 4."""
    tiny = build_backbone("tpslab-tiny", None, seed=0)
    torch.testing.assert_close(tiny.encode_image_vv(images).patches[0],
                               tiny.encode_image_vv(images, start_block=1, out_blocks=(4,)).patches[0])
    assert not torch.allclose(tiny.encode_image_vv(images).patches[0],
                              tiny.encode_image_vv(images, start_block=2).patches[0], atol=1e-4)
