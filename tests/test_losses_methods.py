"""VIAL-HNM, orthogonality, load balance and attribute losses on small hand-computed cases."""

import math

import pytest
import torch

from agreid_kit.losses.methods import attribute_loss, load_balance_loss, orthogonality_loss, vial_hnm_loss

# f0 = (1, 0) and f1 = (0.6, 0.8) share pid 0; f2 = (0, 1) is pid 1.
# pairs: (0,1) positive, cos 0.6; (0,2) negative, cos 0; (1,2) negative, cos 0.8.
FEATS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
PIDS = torch.tensor([0, 0, 1])
POS = (1 - 0.6) * (1 + 0.5 * math.exp(-5 * 0.6))  # = 0.40995...


def test_vial_hnm_by_hand():
    # M = 0.5: hard negatives have cos > 0.5, i.e. only (1,2), contributing 0.8 - 0.5 = 0.3; N_T = 2
    assert vial_hnm_loss(FEATS, PIDS).item() == pytest.approx((POS + 0.3) / 2, abs=1e-6)
    assert POS == pytest.approx(0.4099574, abs=1e-6)
    # features are normalised first: scaling changes nothing
    assert vial_hnm_loss(FEATS * torch.tensor([[3.0], [0.5], [7.0]]),
                         PIDS).item() == pytest.approx((POS + 0.3) / 2, abs=1e-6)
    # M = 0.1: the threshold 0.9 leaves no hard negative; N_T = 1
    assert vial_hnm_loss(FEATS, PIDS, margin=0.1).item() == pytest.approx(POS, abs=1e-6)
    # VIAL without HNM: the positive term alone
    assert vial_hnm_loss(FEATS, PIDS, hard_negatives=False).item() == pytest.approx(POS, abs=1e-6)
    # lambda and beta enter the penalty 1 + lambda * exp(-beta * cos)
    assert vial_hnm_loss(FEATS, PIDS, lam=2.0, beta=1.0, hard_negatives=False).item() == pytest.approx(
        0.4 * (1 + 2 * math.exp(-0.6)), abs=1e-6
    )


def test_vial_hnm_edge_cases_and_gradient():
    f = FEATS.clone().requires_grad_(True)
    loss = vial_hnm_loss(f, torch.tensor([0, 1, 2]), margin=0.1)  # no positives, no hard negatives
    assert loss.item() == 0.0
    loss.backward()  # stays on the graph
    f.grad = None
    vial_hnm_loss(f, PIDS).backward()
    assert f.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected features"):
        vial_hnm_loss(FEATS, torch.tensor([0, 1]))


def test_orthogonality_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [-3.0, 0.0]])
    # |cos| = 0 and |-1/sqrt(2)|
    assert orthogonality_loss(a, b).item() == pytest.approx(0.5 / math.sqrt(2), abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        orthogonality_loss(a, b[:1])


def test_load_balance_by_hand():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    # mean probs (0.5, 0.25, 0.25, 0): 4 * (0.25 + 0.0625 + 0.0625) = 1.5
    assert load_balance_loss(probs).item() == pytest.approx(1.5)
    assert load_balance_loss(torch.full((3, 8), 1 / 8)).item() == pytest.approx(1.0)
    assert load_balance_loss(torch.tensor([[0.0, 1.0, 0.0]])).item() == pytest.approx(3.0)


def test_attribute_loss_ignores_unknown_labels_by_hand():
    logits = [
        torch.tensor([[0.0, 0.0], [5.0, -5.0]]),  # sample 1's label is unknown: its confident logits do not count
        torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, 0.0, 0.0]]),
        torch.tensor([[1.0, 2.0], [3.0, 4.0]]),  # fully unknown attribute: skipped
    ]
    targets = torch.tensor([[0, 0, -1], [-1, 2, -1]])
    ce0 = math.log(2.0)
    ce1 = (-math.log(3.0 / 5.0) + math.log(3.0)) / 2
    # Eq. 11 sums the per-attribute CE over attributes (the paper's weight 0.1 multiplies the sum)
    assert attribute_loss(logits, targets).item() == pytest.approx(ce0 + ce1, abs=1e-6)
    none = attribute_loss([logits[0].requires_grad_(True)], torch.tensor([[-1], [-1]]))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="3 attribute classifiers"):
        attribute_loss(logits, targets[:, :2])
    with pytest.raises(ValueError, match="has label 5"):
        attribute_loss(logits[:1], torch.tensor([[5], [0]]))
