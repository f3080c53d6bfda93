import math

import pytest
import torch
import torch.nn.functional as F

from sdporec.training.losses import dpo_loss, sdpo_loss, sft_loss, window_share


def reference_sigmoid_dpo(pc, pr, rc, rr, beta):
    """An independent sigmoid DPO, written the way TRL's `sigmoid` loss reads: logits = beta *
    ((pc - pr) - (rc - rr)), loss = -log sigmoid(logits), computed in float64 Python math."""
    out = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        logits = beta * ((a - b) - (c - d))
        out.append(math.log1p(math.exp(-logits)) if logits > -30 else -logits)
    return torch.tensor(out, dtype=torch.float64)


def test_hand_computed_sdpo_value():
    # r_w = 1 * (-1 - -2) = 1; r_k = (-3 - -2, -2 - -2) = (-1, 0).
    # L = -log sigmoid(-log(exp(-1-1) + exp(0-1))) = log(1 + e^-2 + e^-1).
    loss, rw, rl = sdpo_loss(
        torch.tensor([-1.0]), torch.tensor([[-3.0, -2.0]]), torch.tensor([-2.0]), torch.tensor([[-2.0, -2.0]]), beta=1.0
    )
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-1)), abs=1e-6)
    assert rw.tolist() == [1.0] and rl.tolist() == [[-1.0, 0.0]]


def test_beta_scales_rewards():
    _, rw, rl = sdpo_loss(
        torch.tensor([-1.0]), torch.tensor([[-3.0]]), torch.tensor([-2.0]), torch.tensor([[-2.0]]), beta=0.5
    )
    assert rw.item() == pytest.approx(0.5) and rl.item() == pytest.approx(-0.5)


def test_k1_is_dpo_and_matches_independent_reference():
    g = torch.Generator().manual_seed(0)
    pc, rc = (
        torch.randn(64, generator=g, dtype=torch.float64) * 5,
        torch.randn(64, generator=g, dtype=torch.float64) * 5,
    )
    pr = torch.randn(64, 1, generator=g, dtype=torch.float64) * 5
    rr = torch.randn(64, 1, generator=g, dtype=torch.float64) * 5
    for beta in (0.1, 1.0, 3.0):
        s, rw, rl = sdpo_loss(pc, pr, rc, rr, beta)
        closed = -F.logsigmoid(rw - rl[:, 0])
        torch.testing.assert_close(s, closed)
        torch.testing.assert_close(s, reference_sigmoid_dpo(pc, pr[:, 0], rc, rr[:, 0], beta))
        d, _, _ = dpo_loss(pc, pr, rc, rr, beta)
        torch.testing.assert_close(d, s)


def test_finite_and_correct_at_extremes():
    chosen, ref = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0])
    rejected = torch.tensor([[1000.0, -1000.0], [-1000.0, -1000.0]])
    loss, _, _ = sdpo_loss(chosen, rejected, ref, torch.zeros(2, 2), beta=1.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(1000.0, rel=1e-6)  # a negative far above the chosen
    assert loss[1].item() == pytest.approx(0.0, abs=1e-6)  # every negative far below
    grad_in = rejected.clone().requires_grad_(True)
    sdpo_loss(chosen, grad_in, ref, torch.zeros(2, 2), beta=1.0)[0].sum().backward()
    assert torch.isfinite(grad_in.grad).all()


def test_more_negatives_never_lower_the_loss():
    pc, rc = torch.tensor([0.5]), torch.tensor([0.0])
    one, _, _ = sdpo_loss(pc, torch.tensor([[0.2]]), rc, torch.tensor([[0.0]]), 1.0)
    two, _, _ = sdpo_loss(pc, torch.tensor([[0.2, -0.3]]), rc, torch.tensor([[0.0, 0.0]]), 1.0)
    assert two.item() > one.item()


@pytest.mark.parametrize(
    "chosen, rejected, ref_chosen, ref_rejected, message",
    [
        ((2,), (2,), (2,), (2,), r"expected chosen \(B,\) and rejected \(B, K\), got \(2,\) and \(2,\)$"),
        ((2, 1), (2, 3), (2,), (2, 3), r"expected chosen \(B,\) and rejected \(B, K\), got \(2, 1\) and \(2, 3\)$"),
        ((2,), (2, 3), (2,), (2, 2), r"^policy and reference log-probs must have the same shapes$"),  # rejected only
        ((2,), (2, 3), (3,), (2, 3), r"^policy and reference log-probs must have the same shapes$"),  # chosen only
    ],
)
def test_shape_errors_are_clear(chosen, rejected, ref_chosen, ref_rejected, message):
    with pytest.raises(ValueError, match=message):
        sdpo_loss(torch.zeros(chosen), torch.zeros(rejected), torch.zeros(ref_chosen), torch.zeros(ref_rejected), 1.0)


def test_dpo_with_k_negatives_averages_the_pairs_by_hand():
    losses, chosen, rejected = dpo_loss(
        torch.tensor([1.0]), torch.tensor([[0.0, 2.0]]), torch.tensor([0.5]), torch.tensor([[0.5, 0.5]]), beta=2.0
    )
    # rewards: chosen 2 * 0.5 = 1; rejected 2 * -0.5 = -1 and 2 * 1.5 = 3
    assert chosen.tolist() == [1.0] and rejected.tolist() == [[-1.0, 3.0]]
    by_hand = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(2.0))) / 2
    assert losses.item() == pytest.approx(by_hand, rel=1e-6)


def test_window_share_by_hand():
    losses, weights = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0])
    # (1 + 2) x 2 processes x 4 accumulation steps / 10 units
    assert window_share(losses, weights, world=2, grad_accum=4, units=10).item() == pytest.approx(2.4)
    assert window_share(losses, torch.ones(3), world=1, grad_accum=1, units=3).item() == pytest.approx(2.0)


def test_sft_loss_is_each_answers_summed_token_loss():
    assert sft_loss(torch.tensor([-2.0, -4.0])).tolist() == [2.0, 4.0]
