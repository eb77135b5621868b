"""tpslab.methods.tps.losses: focal and dice as the paper states them (Eq. 11), and equal to the literal (slow) version."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tpslab.methods.tps.losses import dice_loss, focal_loss, image_loss, segmentation_loss, tps_loss, upsample_anomalous
from tpslab.methods.tps.model import TPSOutput, upsample_probs

# -- the literal version: two-channel maps per layer, one-hot targets, one Dice per channel ----------


def slow_focal(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """probs (B, C, H, W), target (B, H, W): one-hot clamped to [1e-5, 1 - 1e-5], pt = onehot . p + 1e-5."""
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)
    onehot = F.one_hot(target.reshape(-1).long(), c).to(p.dtype).clamp(1e-5 / (c - 1), 1 - 1e-5)
    pt = (onehot * p).sum(dim=1) + 1e-5
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def slow_tps_loss(out: TPSOutput, masks: torch.Tensor, labels: torch.Tensor, has_mask: torch.Tensor,
                  layer_weight: float = 1.0) -> torch.Tensor:
    """Eq. 11 term by term: each layer upsampled on its own, both channels, focal + two Dice."""
    total = F.cross_entropy(out.image_logits, labels.long())
    keep = has_mask.bool()
    for logits in out.patch_logits:
        if keep.any():
            probs = upsample_probs(logits[keep], masks.shape[-1])  # (B', 2, H, W)
            m = masks[keep]
            seg = slow_focal(probs, m) + dice_loss(probs[:, 1], m) + dice_loss(probs[:, 0], 1 - m)
            total = total + layer_weight * seg
    return total


def test_focal_matches_the_formula_pixel_by_pixel():
    p_anom = torch.tensor([[[0.9, 0.2], [0.5, 0.01]]])  # (1, 2, 2)
    probs = torch.stack([1 - p_anom, p_anom], dim=1)  # (1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]])
    expected = []
    for pa, t in zip(p_anom.flatten().tolist(), target.flatten().tolist()):
        onehot = [1e-5, 1 - 1e-5] if t == 1 else [1 - 1e-5, 1e-5]
        pt = onehot[0] * (1 - pa) + onehot[1] * pa + 1e-5
        expected.append(-((1 - pt) ** 2) * math.log(pt))
    assert focal_loss(p_anom, target).item() == pytest_approx(sum(expected) / 4)
    assert slow_focal(probs, target).item() == pytest_approx(sum(expected) / 4)


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_dice_known_values():
    m = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert dice_loss(m, m).item() == pytest_approx(1 - 5 / 5)  # perfect: (2*2+1)/(2+2+1)
    assert dice_loss(1 - m, m).item() == pytest_approx(1 - 1 / 5)  # disjoint
    assert dice_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == pytest_approx(0.0)  # both empty


def test_dice_is_per_image_then_averaged():
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    m = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    per_image = [1 - 3 / 3, 1 - 1 / 3]
    assert dice_loss(a, m).item() == pytest_approx(sum(per_image) / 2)


def test_segmentation_loss_rewards_the_right_map():
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:5, 2:5] = 1
    good = (mask * 0.98 + 0.01)[None]  # (1 layer, B, H, W) anomalous probabilities
    bad = 1 - good
    assert segmentation_loss(good, mask) < segmentation_loss(bad, mask)
    assert segmentation_loss(torch.cat([good, good]), mask) == pytest_approx(2 * segmentation_loss(good, mask).item())
    both = torch.stack([1 - good[0], good[0]], dim=1)  # (B, 2, H, W)
    literal = slow_focal(both, mask) + dice_loss(both[:, 1], mask) + dice_loss(both[:, 0], 1 - mask)
    assert segmentation_loss(good, mask).item() == pytest_approx(literal.item())


def test_upsampling_once_equals_each_layer_alone():
    layers = [torch.randn(3, 16, 2, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    up = upsample_anomalous(layers, 12)  # (K, B, 12, 12)
    for k, logits in enumerate(layers):
        assert torch.allclose(up[k], upsample_probs(logits, 12)[:, 1], atol=1e-6)
    assert torch.allclose(upsample_anomalous(layers, 37)[1], upsample_probs(layers[1], 37)[:, 1], atol=1e-6)


@pytest.mark.parametrize("has", [[True, True, True, True], [True, False, True, False], [False] * 4])
def test_tps_loss_equals_the_literal_version_on_the_tiny_model(has):
    """The training loss of the tiny TPS on random features: value and gradients as the literal formulas."""
    import tpslab

    model = tpslab.build_model("tpslab-tiny", None, None, seed=0).train()
    g = torch.Generator().manual_seed(0)
    b, size = 4, model.image_size
    with torch.no_grad():
        feats = model.encode_images(torch.randn(b, 3, size, size, generator=g))
    masks = (torch.rand(b, size, size, generator=g) > 0.7).float()
    labels, has_mask = torch.tensor([0, 1, 1, 0]), torch.tensor(has)
    grads = []
    for fn in (lambda out: tps_loss(out, masks, labels, has_mask, 2.0).total,
               lambda out: slow_tps_loss(out, masks, labels, has_mask, 2.0)):
        model.zero_grad()
        loss = fn(model.forward_features(feats))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (fast, g_fast), (slow, g_slow) = grads
    assert abs(fast.item() - slow.item()) < 1e-6
    assert len(g_fast) == len(g_slow) > 0
    scale = max(float(c.abs().max()) for c in g_slow)  # float32 rounding, relative to the largest gradient
    for a, c in zip(g_fast, g_slow):
        assert (a - c).abs().max() <= 1e-5 * scale


def test_image_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1])
    expected = -(torch.log_softmax(logits, -1)[0, 0] + torch.log_softmax(logits, -1)[1, 1]) / 2
    assert image_loss(logits, labels).item() == pytest_approx(expected.item())


def test_tps_loss_by_hand():
    """One layer of 2x2 patches, all logits 0 (P = 0.5 everywhere), upsampled to 4x4 masks."""
    image_logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # softmax: (1/2, 1/2), (1/4, 3/4)
    out = TPSOutput(image_logits, [torch.zeros(2, 4, 2)])  # (B, L, 2): g = 2
    masks = torch.zeros(2, 4, 4)
    masks[0, :2, :2] = 1  # 4 of 16 pixels
    masks[1] = 1  # image 1 has no true mask: this must not count
    labels, has_mask = torch.tensor([0, 1]), torch.tensor([True, False])
    ce = (math.log(2) - math.log(3 / 4)) / 2
    pt = 0.5 * (1 - 1e-5) + 0.5 * 1e-5 + 1e-5
    focal = -((1 - pt) ** 2) * math.log(pt)  # the same at every pixel
    dice_a = 1 - (2 * 0.5 * 4 + 1) / (0.5 * 16 + 4 + 1)  # = 1 - 5/13
    dice_n = 1 - (2 * 0.5 * 12 + 1) / (0.5 * 16 + 12 + 1)  # = 1 - 13/21
    loss = tps_loss(out, masks, labels, has_mask)
    assert loss.image.item() == pytest_approx(ce)
    assert loss.segmentation.item() == pytest_approx(focal + dice_a + dice_n)
    assert loss.total.item() == pytest_approx(ce + focal + dice_a + dice_n)
    two_layers = tps_loss(TPSOutput(image_logits, [torch.zeros(2, 4, 2)] * 2), masks, labels, has_mask)
    assert two_layers.segmentation.item() == pytest_approx(2 * (focal + dice_a + dice_n))
    none = tps_loss(out, masks, labels, torch.tensor([False, False]))  # no mask at all: image loss only
    assert none.segmentation.item() == 0 and none.total.item() == pytest_approx(ce)
