"""Preference recipe: DPO and Softmax-DPO from an SFT checkpoint, which is also the frozen reference.

Each sample's K negatives are drawn (seeded by sample and epoch) from the non-target candidates of the
prompt the model sees, so they change with every epoch's candidate list.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence


from .batching import AnswerBatch, collate, split_chosen_rejected
from .candidates import catalogue, draw_negatives
from .config import opt, require
from .logprobs import answer_logprobs
from .losses import LOSSES
from .modeling import pick_device, is_adapter, policy_from_sft, save_checkpoint
from .samples import Sample, atomic_write_text
from .sft import prompt_for
from .trainer import TrainConfig, start_run, train_loop


@dataclass
class PreferenceConfig(TrainConfig):
    model: str = opt("", "the SFT checkpoint directory (its 'model' folder); also the frozen reference")
    loss: str = opt("sdpo", "sdpo: Softmax-DPO over K negatives; dpo: sigmoid DPO, one pair per negative",
                    choices=tuple(LOSSES))
    negatives: int = opt(3, "K, negatives per sample, drawn from the prompt's non-target candidates")
    beta: float = opt(1.0, "beta: scale of the implicit reward")
    epochs: int = opt(1, "passes over the training samples")
    lr: float = opt(5e-4, "peak learning rate")

    def validate(self) -> None:
        super().validate()
        require(bool(self.model), "model", "required: the SFT checkpoint to start from")
        require(self.negatives >= 1, "negatives", "must be at least 1")
        require(self.beta > 0, "beta", "must be positive")


def run_preference(cfg: PreferenceConfig) -> dict:
    out, train, valid = start_run(cfg)
    items = catalogue(train)
    policy, codec = policy_from_sft(cfg.model, cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.dtype)
    policy.to(pick_device(cfg.device))
    base_dir = Path(cfg.model) / "base" if is_adapter(cfg.model) and (Path(cfg.model) / "base").is_dir() else None
    loss_fn, k = LOSSES[cfg.loss], cfg.negatives
    print(f"{cfg.loss}: {len(train)} training samples, K={k}, beta={cfg.beta}, from {cfg.model}")

    def make_batch(samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        return collate([codec.encode_prompt(prompt_for(s, cfg.domain, cfg.seed, epoch)) for s in samples],
                       [[codec.encode_answer(t) for t in [s.target] + draw_negatives(s, k, cfg.seed, epoch)]
                        for s in samples], codec.pad_id)

    def step(batch: AnswerBatch):
        logps, _ = answer_logprobs(policy.model, batch)            # (B, 1+K)
        with policy.reference() as ref:
            ref_logps, _ = answer_logprobs(ref, batch)              # (B, 1+K)
        chosen, rejected = split_chosen_rejected(logps, k)
        ref_chosen, ref_rejected = split_chosen_rejected(ref_logps, k)
        losses, r_chosen, r_rejected = loss_fn(chosen, rejected, ref_chosen, ref_rejected, cfg.beta)
        stats = {
            "reward_chosen": r_chosen.mean().item(),
            "reward_rejected": r_rejected.mean().item(),
            "reward_margin": (r_chosen - r_rejected.mean(1)).mean().item(),
            "accuracy": (r_chosen > r_rejected.max(1).values).float().mean().item(),
            "logp_chosen": chosen.mean().item(),
            "logp_rejected": rejected.mean().item(),
        }
        return losses.mean(), stats

    meta = {"stage": cfg.loss, "trained_from": cfg.model, "config": asdict(cfg)}
    save = lambda: save_checkpoint(policy.model, codec, out / "model", meta, base_dir)
    summary = train_loop(cfg, policy.model, codec, train, valid, items, make_batch, step, save, out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
