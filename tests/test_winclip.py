"""WinCLIP (tpslab/methods/winclip.py): equations on hand-checked cases, window embeddings the slow way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tpslab.methods import build_method
from tpslab.methods.winclip import (
    Settings,
    anomaly_probability,
    harmonic_aggregation,
    harmonic_mean,
    window_masks,
)
from tpslab.methods.winclip_prompts import (
    ANOMALOUS_STATES,
    NORMAL_STATES,
    TEMPLATES_ANOMALIB21,
    TEMPLATES_PAPER22,
    class_word,
    prompt_ensemble,
)
from tpslab.utils import TPSLabError


@pytest.fixture(scope="module")
def winclip():
    """WinCLIP on the tiny random backbone (64 px, 8x8 grid)."""
    return build_method("winclip", backbone="tpslab-tiny")


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# -- equations ---------------------------------------------------------------------
def test_harmonic_aggregation_anomalib_published_case():
    """anomalib's docstring/unit-test case: 3x3 grid, four 2x2 windows scoring 1, .75, .5, .25."""
    scores = torch.tensor([[1.0, 0.75, 0.5, 0.25]])
    expected = torch.tensor([[1.0, 0.8571, 0.75], [0.6667, 0.48, 0.375], [0.5, 0.3333, 0.25]])
    out = harmonic_aggregation(scores, window_masks(3, 2), 3)
    assert out.shape == (1, 3, 3)
    torch.testing.assert_close(out[0], expected, atol=1e-4, rtol=0)


def test_harmonic_aggregation_zero_score_and_uncovered_patch():
    scores = torch.tensor([[0.0, 0.5]])
    windows = torch.tensor([[0, 1], [1, 2]])  # on a 2x2 grid patch 3 is covered by no window
    out = harmonic_aggregation(scores, windows, 2)[0]
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.5, 0.0]]))  # 1/0 -> 0; uncovered -> 0


def test_harmonic_mean_is_the_three_map_formula():
    m2, m3, s = torch.rand(4, 5, 5) + 0.1, torch.rand(4, 5, 5) + 0.1, torch.rand(4, 1, 1).expand(4, 5, 5) + 0.1
    torch.testing.assert_close(harmonic_mean([m2, m3, s]), 3 / (1 / m2 + 1 / m3 + 1 / s))


def test_window_masks_hand_drawn_grid():
    #  0  1  2  3
    #  4  5  6  7
    #  8  9 10 11
    # 12 13 14 15
    assert window_masks(4, 3).tolist() == [[0, 1, 2, 4, 5, 6, 8, 9, 10], [1, 2, 3, 5, 6, 7, 9, 10, 11],
                                           [4, 5, 6, 8, 9, 10, 12, 13, 14], [5, 6, 7, 9, 10, 11, 13, 14, 15]]
    assert window_masks(4, 2, stride=2).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert window_masks(4, 2)[:4].tolist() == [[0, 1, 4, 5], [1, 2, 5, 6], [2, 3, 6, 7], [4, 5, 8, 9]]
    assert window_masks(15, 2).shape == (196, 4) and window_masks(15, 3).shape == (169, 9)
    assert window_masks(4, 2).dtype == torch.long
    with pytest.raises(TPSLabError):
        window_masks(2, 3)


def test_anomaly_probability_is_softmax_of_cosines():
    emb = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1, 2, 2)
    text = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # normal along x, anomalous along y
    p = anomaly_probability(emb, text, temperature=1.0)
    e = torch.exp(torch.tensor(1.0))
    torch.testing.assert_close(p, torch.tensor([[1 / (1 + e), e / (1 + e)]]))


# -- prompts -------------------------------------------------------------------------
def test_prompt_counts_and_lists():
    assert (len(NORMAL_STATES), len(ANOMALOUS_STATES)) == (7, 4)
    assert [len(x) for x in prompt_ensemble("bottle", "anomalib21")] == [147, 84]
    assert [len(x) for x in prompt_ensemble("bottle", "paper22")] == [154, 88]
    assert len(set(TEMPLATES_PAPER22)) == 22
    assert len(set(TEMPLATES_ANOMALIB21)) == 20  # the duplicated "jpeg corrupted ... the" is kept
    assert set(TEMPLATES_ANOMALIB21) < set(TEMPLATES_PAPER22)
    assert "broken" not in " ".join(ANOMALOUS_STATES)
    normal, anomalous = prompt_ensemble("metal_nut")
    assert normal[0] == "a cropped photo of the metal_nut." and anomalous[21] == "a cropped photo of the metal_nut with flaw."
    assert class_word("metal_nut", "spaces") == "metal nut" and class_word("metal_nut") == "metal_nut"
    with pytest.raises(TPSLabError):
        prompt_ensemble("bottle", "paper21")


def test_text_embeddings_are_means_of_unnormalised_prompts(winclip):
    normal, anomalous = prompt_ensemble("pipe_fryum")
    bb = winclip.backbone
    expected = torch.stack([bb.encode_sentences(normal).mean(0), bb.encode_sentences(anomalous).mean(0)])
    torch.testing.assert_close(winclip.text_embeddings("pipe_fryum"), expected)


# -- window embeddings -------------------------------------------------------------------
def _slow_window_embedding(clip, image: torch.Tensor, window: list[int]) -> torch.Tensor:
    """One window the obvious way: hand-built tokens of CLS + the window, then the whole ViT."""
    v = clip.visual
    x = v.conv1(image[None]).flatten(2).transpose(1, 2)  # (1, L, W)
    x = torch.cat([v.class_embedding[None, None], x], dim=1) + v.positional_embedding  # (1, 1+L, W)
    x = x[:, [0] + [1 + i for i in window]]  # keep the class token and the window's patches
    x = v.transformer(v.ln_pre(x))  # (1, 1+k, W)
    return (v.ln_post(x[:, 0]) @ v.proj)[0]  # (D,)


def test_token_selection_equals_the_hand_built_subset(winclip, images):
    bb = winclip.backbone
    windows = window_masks(bb.grid_size, 3)[[0, 7, 35]]  # three 3x3 windows of the 8x8 grid
    fast = bb.encode_windows(images, windows)  # (B, 3, D)
    assert fast.shape == (2, 3, bb.embed_dim)
    with torch.no_grad():
        for b in range(2):
            for j, w in enumerate(windows.tolist()):
                torch.testing.assert_close(fast[b, j], _slow_window_embedding(bb.clip, images[b], w), atol=1e-5, rtol=1e-4)


def test_whole_image_window_is_open_clip_image_embedding(winclip, images):
    bb = winclip.backbone
    whole = bb.encode_windows(images, torch.arange(bb.grid_size ** 2)[None])[:, 0]
    torch.testing.assert_close(whole, bb.clip.encode_image(images), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("max_tokens", [1, 23])  # one sequence per call; 2 sequences of 10 tokens per call
def test_batched_windows_equal_per_window_calls(winclip, images, max_tokens):
    bb = winclip.backbone
    windows = winclip.windows(3)  # (36, 9)
    all_at_once = bb.encode_windows(images, windows)
    torch.testing.assert_close(bb.encode_windows(images, windows, max_tokens_per_call=max_tokens), all_at_once,
                               atol=1e-5, rtol=1e-4)


def test_encode_windows_rejects_bad_indices(winclip, images):
    with pytest.raises(TPSLabError):
        winclip.backbone.encode_windows(images, torch.tensor([[0, 64]]))


# -- the detector ----------------------------------------------------------------------
def test_predict_shapes_ranges_and_parts(winclip, images):
    pred = winclip.predict(images, ["bottle", "metal_nut"], return_parts=True)
    assert pred.image_scores.shape == (2,) and pred.anomaly_maps.shape == (2, 64, 64)
    for t in (pred.image_scores, pred.anomaly_maps):
        assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    parts = pred.extras
    assert parts["window_scores"][2].shape == (2, 49) and parts["window_scores"][3].shape == (2, 36)
    image_map = pred.image_scores[:, None, None].expand(-1, 8, 8)
    torch.testing.assert_close(parts["grid_map"], harmonic_mean([parts["scale_maps"][2], parts["scale_maps"][3], image_map]))
    up = F.interpolate(parts["grid_map"][:, None], size=64, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(pred.anomaly_maps, up)
    # the image score is the whole-image embedding's score, with each image's own class prompts
    emb = winclip.backbone.clip.encode_image(images)
    for b, name in enumerate(["bottle", "metal_nut"]):
        expected = anomaly_probability(emb[b][None, None], winclip.text_embeddings(name), 0.07)[0, 0]
        torch.testing.assert_close(pred.image_scores[b], expected, atol=1e-5, rtol=1e-4)
    assert winclip.predict(images, ["bottle", "bottle"]).extras == {}


def test_protocol_settings_and_errors(winclip, images):
    assert winclip.protocol.image_size == 64 and winclip.protocol.sigma == 0
    assert winclip.settings.pretrained is None  # "auto": random weights for a test backbone
    assert Settings().pretrained == "laion400m_e31" and Settings().backbone == "ViT-B-16-plus-240"
    assert Settings.from_dict({"scales": [2, 3]}).to_dict()["scales"] == [2, 3]
    with pytest.raises(TPSLabError, match="unknown winclip setting"):
        build_method("winclip", backbone="tpslab-tiny", window_stride=2)
    with pytest.raises(TPSLabError):
        Settings(templates="paper21")
    with pytest.raises(TPSLabError):
        Settings(class_word="lower")
    with pytest.raises(TPSLabError):
        winclip.predict(images)  # class names are needed


def test_figure(winclip, images):
    from tpslab.viz.baselines import explain_windows, plot_windows, window_summary

    pred = explain_windows(winclip, images[0], "bottle")
    fig = plot_windows(winclip, images[0], "bottle", prediction=pred, label="random weights")
    assert len(fig.axes) == 9  # 2 rows x (2 scales + image + result) + colour bar
    summary = window_summary(pred)
    assert summary["image_score"] == round(float(pred.image_scores[0]), 4)
    assert summary["zero_shot_min"] <= summary["zero_shot_max"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_windows_of_a_batch_go_in_few_transformer_calls(winclip, images):
    calls = []
    handle = winclip.backbone.clip.visual.transformer.register_forward_pre_hook(lambda _m, a: calls.append(a[0].shape))
    try:
        winclip.backbone.encode_windows(images, winclip.windows(2))  # 2 images x 49 windows of 5 tokens
        winclip.backbone.encode_windows(images, winclip.windows(2), max_tokens_per_call=250)  # 50 sequences a call
    finally:
        handle.remove()
    assert calls == [(98, 5, 64), (50, 5, 64), (48, 5, 64)]
