"""The backbone pieces the baselines need, each against a slow, obviously-correct computation."""

from __future__ import annotations

import pytest
import torch

from tpslab.backbone import build_backbone
from tpslab.utils import TPSLabError


@pytest.fixture(scope="module")
def ref24():
    """The 24-block test architecture of the baselines spec (section 7), random weights, QuickGELU."""
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
