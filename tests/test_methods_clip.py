"""tpslab.methods.clip: the zero-shot CLIP baseline (docs/baselines.md#section-1, #decision-8-1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tpslab.methods import build_method
from tpslab.methods.clip import Settings, class_word, sentences
from tpslab.utils import TPSLabError

TINY = dict(backbone="tpslab-tiny", pretrained=None, image_size=None)


@pytest.fixture(scope="module")
def clip():
    return build_method("clip", **TINY)


def test_sentences_and_class_word():
    assert class_word("metal_nut") == "metal nut"
    assert sentences("metal_nut") == ["a photo of a normal metal nut.", "a photo of an anomalous metal nut."]
    assert sentences("01") == ["a photo of a normal 01.", "a photo of an anomalous 01."]


def test_defaults_are_the_reference_setting():
    s = Settings()
    assert (s.backbone, s.pretrained, s.image_size, s.temperature, s.sigma) == ("ViT-L-14-336", "openai", 518, 0.07, 4.0)


def test_unknown_settings_are_rejected():
    with pytest.raises(TPSLabError, match="unknown clip setting"):
        build_method("clip", backbone="tpslab-tiny", layers=(4,))


def test_interface(clip, images):
    assert clip.method == "clip" and not clip.trains and not clip.transductive
    assert clip.image_size == 64
    assert clip.protocol.image_size == 64 and clip.protocol.sigma == pytest.approx(4 * 64 / 518)
    pred = clip.predict(images, ["bottle"] * 4)
    assert pred.image_scores.shape == (4,) and pred.anomaly_maps.shape == (4, 64, 64)
    for x in (pred.image_scores, pred.anomaly_maps):
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    set_pred = clip.predict_set(images, "bottle")
    torch.testing.assert_close(set_pred.anomaly_maps, pred.anomaly_maps)
    with pytest.raises(TPSLabError, match="class name"):
        clip.predict(images)


def test_scores_by_hand(clip, images):
    """Image score from open_clip's own encoders; map from the last block's tokens (ln_post + proj)."""
    oc = clip.backbone.clip
    visual = oc.visual
    with torch.no_grad():
        text = F.normalize(oc.encode_text(clip.backbone.tokenize(sentences("metal_nut"))), dim=-1)  # (2, D)
        v = F.normalize(oc.encode_image(images), dim=-1)  # (B, D)
        expected_scores = torch.softmax(v @ text.T / 0.07, dim=-1)[:, 1]
        x = clip.backbone.tokens(images)
        for block in visual.transformer.resblocks:
            x = block(x)
        z = F.normalize(visual.ln_post(x[:, 1:]) @ visual.proj, dim=-1)  # (B, 64, D)
        p_anomalous = torch.softmax(z @ text.T / 0.07, dim=-1)[..., 1].reshape(4, 1, 8, 8)
        expected_maps = F.interpolate(p_anomalous, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    pred = clip.predict(images, ["metal_nut"] * 4)
    torch.testing.assert_close(pred.image_scores, expected_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.anomaly_maps, expected_maps, atol=1e-5, rtol=1e-5)


def test_each_image_uses_its_own_class(clip, images):
    mixed = clip.predict(images[:2], ["bottle", "metal_nut"])
    alone = clip.predict(images[1:2], ["metal_nut"])
    torch.testing.assert_close(mixed.image_scores[1:], alone.image_scores)
    torch.testing.assert_close(mixed.anomaly_maps[1:], alone.anomaly_maps)
    assert not torch.allclose(clip.predict(images[1:2], ["bottle"]).image_scores, alone.image_scores)
