"""tpslab.losses: focal and dice exactly as the spec states them."""

from __future__ import annotations

import math

import torch

from tpslab.losses import dice_loss, focal_loss, image_loss, segmentation_loss


def test_focal_matches_the_formula_pixel_by_pixel():
    p_anom = torch.tensor([[[0.9, 0.2], [0.5, 0.01]]])  # (1, 2, 2)
    probs = torch.stack([1 - p_anom, p_anom], dim=1)  # (1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]])
    expected = []
    for pa, t in zip(p_anom.flatten().tolist(), target.flatten().tolist()):
        onehot = [1e-5, 1 - 1e-5] if t == 1 else [1 - 1e-5, 1e-5]
        pt = onehot[0] * (1 - pa) + onehot[1] * pa + 1e-5
        expected.append(-((1 - pt) ** 2) * math.log(pt))
    assert focal_loss(probs, target).item() == pytest_approx(sum(expected) / 4)


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
    good = torch.stack([1 - mask * 0.98 - 0.01, mask * 0.98 + 0.01], dim=1)
    bad = good.flip(1)
    assert segmentation_loss([good], mask) < segmentation_loss([bad], mask)
    assert segmentation_loss([good, good], mask) == pytest_approx(2 * segmentation_loss([good], mask).item())


def test_image_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1])
    expected = -(torch.log_softmax(logits, -1)[0, 0] + torch.log_softmax(logits, -1)[1, 1]) / 2
    assert image_loss(logits, labels).item() == pytest_approx(expected.item())


def test_tps_loss_by_hand():
    """One layer of 2x2 patches, all logits 0 (P = 0.5 everywhere), upsampled to 4x4 masks."""
    from tpslab.losses import tps_loss
    from tpslab.model import TPSOutput

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
