"""Losses: pure functions of sequence log-probs. They return per-example values; trainers average.

Shapes: chosen (B,), rejected (B, K). Rewards are r = beta * (log pi - log pi_ref).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax-DPO: L = -log sigmoid(-log sum_k exp(r_k - r_w)).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B, K)). With K = 1 this is DPO's
    -log sigmoid(r_w - r_l). logsumexp and logsigmoid keep it finite when beta * delta is +-1000."""
    if policy_chosen_logps.dim() != 1 or policy_rejected_logps.dim() != 2:
        raise ValueError(
            f"expected chosen (B,) and rejected (B, K), got {tuple(policy_chosen_logps.shape)} "
            f"and {tuple(policy_rejected_logps.shape)}"
        )
    if (
        policy_rejected_logps.shape != reference_rejected_logps.shape
        or policy_chosen_logps.shape != reference_chosen_logps.shape
    ):
        raise ValueError("policy and reference log-probs must have the same shapes")
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)  # (B, K)
    margin = -torch.logsumexp(rejected_rewards - chosen_rewards.unsqueeze(1), dim=1)  # (B,)
    return -F.logsigmoid(margin), chosen_rewards, rejected_rewards


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO with K negatives per chosen answer: each (chosen, negative) pair is its own DPO term,
    averaged over the K pairs. Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B, K))."""
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards.unsqueeze(1) - rejected_rewards).mean(1)
    return losses, chosen_rewards, rejected_rewards


def sft_loss(answer_logps: torch.Tensor) -> torch.Tensor:
    """Next-token loss of each answer, summed over its tokens -> (B,), from answer_logps (B,) (summed token
    log-probs). The trainer divides the global batch's sum by its answer tokens: a mean over the tokens of
    all micro-batches on all processes, whatever the batch size, accumulation and process count."""
    return -answer_logps


def window_share(losses: torch.Tensor, weights: torch.Tensor, world: int, grad_accum: int, units: int) -> torch.Tensor:
    """What one process backpropagates for one micro-batch: its weighted loss sum over the step window's units
    (answer tokens for SFT, samples for DPO / S-DPO), times processes x accumulation steps, which accelerate
    divides back out (it averages processes' gradients and scales each micro-batch by 1 / grad_accum). The
    step's gradient is then that of (sum of the global batch's losses) / (its units), whatever the split."""
    return (losses * weights).sum() * (world * grad_accum / units)


LOSSES = {"sdpo": sdpo_loss, "dpo": dpo_loss}
