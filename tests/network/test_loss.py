"""Loss of Eqs. 10-11: hand-computed values, the hard negatives picked, the normalisation."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from voxloc.network.loss import voxel_loss


def softplus(z: float) -> float:
    """BCE of a negative voxel with logit z: -log(1 - σ(z)) = log(1 + e^z)."""
    return math.log1p(math.exp(z))


def one_row(c_logits, labels, zeta_logits=0.0, zeta_true=(0.5, 0.5, 0.5)):
    """Logits and targets (1, 1, 4, 1, W) for a single row of voxels."""
    w = len(c_logits)
    logits = torch.zeros(1, 1, 4, 1, w)
    logits[0, 0, 0, 0] = torch.tensor(c_logits, dtype=torch.float32)
    logits[0, 0, 1:, 0] = zeta_logits
    targets = torch.zeros(1, 1, 4, 1, w)
    targets[0, 0, 0, 0] = torch.tensor(labels, dtype=torch.float32)
    for q in range(3):
        targets[0, 0, q + 1, 0] = torch.tensor(labels, dtype=torch.float32) * zeta_true[q]
    return logits.requires_grad_(True), targets


def test_hand_made_case_picks_the_three_hardest_negatives():
    # one positive (logit 0: BCE ln 2; ζ̂ = 0.5 vs ζ = (0.25, 0.5, 0.75): L1 = 0.5) and five
    # negatives with logits 3, -2, 1, 2, -5: the three hardest are 3, 2 and 1
    logits, targets = one_row(
        [0.0, 3.0, -2.0, 1.0, 2.0, -5.0], [1, 0, 0, 0, 0, 0], zeta_true=(0.25, 0.5, 0.75)
    )
    terms = voxel_loss(logits, targets, neg_per_pos=3)
    expected = math.log(2) + softplus(3) + softplus(2) + softplus(1) + 0.5
    assert terms.total.item() == pytest.approx(expected, rel=1e-6)
    assert terms.bce_pos.item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms.bce_neg.item() == pytest.approx(softplus(3) + softplus(2) + softplus(1), rel=1e-6)
    assert terms.l1_zeta.item() == pytest.approx(0.5, rel=1e-6)
    assert (terms.n_pos, terms.n_neg) == (1, 3)
    terms.total.backward()
    g = logits.grad[0, 0, 0, 0]
    # d softplus(z)/dz = σ(z) for the chosen negatives, 0 for the easy ones, σ(0) - 1 for the positive
    assert g.tolist() == pytest.approx(
        [-0.5, 1 / (1 + math.exp(-3)), 0.0, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2)), 0.0], abs=1e-6
    )
    # ζ is regressed on the positive only: d|σ(0) - 0.25|/dz = σ'(0) = 0.25, at 0.5 the L1 kink (0)
    assert logits.grad[0, 0, 1:, 0, 1:].abs().max().item() == 0.0
    assert logits.grad[0, 0, 1:, 0, 0].tolist() == pytest.approx([0.25, 0.0, -0.25], abs=1e-6)


def test_ratio_is_configurable():
    logits, targets = one_row([0.0, 3.0, -2.0, 1.0, 2.0, -5.0], [1, 0, 0, 0, 0, 0])
    terms = voxel_loss(logits, targets, neg_per_pos=1)
    assert terms.n_neg == 1
    assert terms.total.item() == pytest.approx(math.log(2) + softplus(3), rel=1e-6)


def test_mining_per_frame_and_normalised_per_positive():
    # frame 0: two positives (logit 0) and eight negatives, six of logit 0 and two of -10:
    # 3 x 2 = 6 negatives, all of BCE ln 2. Frame 1: no positive, still 3 negatives: the
    # logits 2, 1, 0. The sum is divided by the 2 positives of the batch.
    logits = torch.zeros(2, 1, 4, 1, 10)
    targets = torch.zeros(2, 1, 4, 1, 10)
    targets[0, 0, 0, 0, :2] = 1
    targets[0, 0, 1:, 0, :2] = 0.5  # ζ̂ = σ(0) = 0.5: no L1
    logits[0, 0, 0, 0, 8:] = -10.0
    logits[1, 0, 0, 0] = torch.tensor([1.0, -1.0, 0.0, 2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0])
    terms = voxel_loss(logits, targets)
    expected = (2 * math.log(2) + 6 * math.log(2) + softplus(2) + softplus(1) + math.log(2)) / 2
    assert terms.total.item() == pytest.approx(expected, rel=1e-6)
    assert (terms.n_pos, terms.n_neg) == (2, 9)


def test_no_more_negatives_than_exist():
    # 2 positives want 6 negatives but only 1 exists
    logits, targets = one_row([0.0, 0.0, 4.0], [1, 1, 0])
    terms = voxel_loss(logits, targets)
    assert terms.n_neg == 1
    assert terms.total.item() == pytest.approx((2 * math.log(2) + softplus(4)) / 2, rel=1e-6)


def test_saturated_outputs_stay_finite():
    logits, targets = one_row([-200.0, 200.0], [1, 0])
    terms = voxel_loss(logits, targets)
    assert math.isfinite(terms.total.item())
    assert terms.total.item() == pytest.approx(400.0, rel=1e-6)  # BCE of both ≈ |logit|


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(N, P, 4, H, W\)"):
        voxel_loss(torch.zeros(1, 4, 4, 8, 8), torch.zeros(1, 4, 3, 8, 8))
