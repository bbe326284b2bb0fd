"""ReID losses against values computed by hand."""

import math

import pytest
import torch

from agreid_kit.losses.reid import cross_entropy, pairwise_euclidean, triplet_soft_margin_batch_hard, view_cross_entropy


def test_cross_entropy_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    target = torch.tensor([0])
    z = math.exp(2) + 2.0
    assert cross_entropy(logits, target).item() == pytest.approx(-math.log(math.exp(2) / z), rel=1e-6)
    # label smoothing eps: target = (1 - eps) one-hot + eps / C
    eps = 0.3
    logp = [2 - math.log(z), -math.log(z), -math.log(z)]
    q = [1 - eps + eps / 3, eps / 3, eps / 3]
    expected = -sum(a * b for a, b in zip(q, logp))
    assert cross_entropy(logits, target, eps).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, target, 1.5)


def test_triplet_soft_margin_batch_hard_hand_value():
    # 1-D features: ids A = {0, 1}, B = {3, 7}
    feat = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: pos 1, hardest neg 3 -> 1 - 3 = -2; anchor 1: pos 1, neg 2 -> -1
    # anchor 3: pos 4, neg min(3, 2) = 2 -> 2; anchor 7: pos 4, neg 6 -> -2
    expected = sum(math.log1p(math.exp(x)) for x in (-2, -1, 2, -2)) / 4
    assert triplet_soft_margin_batch_hard(feat, pids).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_skips_anchors_without_positive_and_keeps_grad():
    feat = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]], requires_grad=True)
    pids = torch.tensor([0, 0, 1])  # anchor 2 has no positive
    loss = triplet_soft_margin_batch_hard(feat, pids)
    # anchor 0: pos 5, neg 10 -> -5; anchor 1: pos 5, neg sqrt(49 + 16)
    expected = (math.log1p(math.exp(-5)) + math.log1p(math.exp(5 - math.sqrt(65)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(feat.grad).all()
    assert pairwise_euclidean(feat.detach())[0, 1].item() == pytest.approx(5.0, rel=1e-5)


def test_view_cross_entropy_is_scaled_ce():
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    views = torch.tensor([1, 1])
    ce = (-math.log(math.exp(0) / (math.e + 1)) - math.log(math.exp(3) / (math.exp(3) + 1))) / 2
    assert view_cross_entropy(logits, views, 0.001).item() == pytest.approx(0.001 * ce, rel=1e-5)
