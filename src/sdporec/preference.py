"""Preference recipe: DPO and Softmax-DPO from an SFT checkpoint, which is also the frozen reference.

Each sample's K negatives are drawn (seeded by sample and epoch) from the non-target candidates of the
prompt the model sees, so they change with every epoch's candidate list.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch


from .batching import AnswerBatch, collate, same_answer_count, split_chosen_rejected
from .candidates import NEGATIVE_SOURCES, catalogue, draw_negatives, popular_negatives, top_negatives
from .config import opt, require, require_outside
from .logprobs import layout_fn
from .losses import LOSSES, sft_loss
from .distributed import even_shard, gather
from .codec import CODEC_FILE
from .modeling import (enable_gradient_checkpointing, is_adapter, load_codec_of, load_model, needs_own_base,
                       policy_from_sft, recorded_domain, save_checkpoint)
from .reference import cache_key, file_digest, inputs_digest, model_fingerprint, reference_identity, reference_logps
from .samples import Sample, read_json_object
from .sft import prompt_for
from .sources import is_gguf, require_no_4bit_gguf, resolve_model
from .trainer import TrainConfig, default_lr, start_run, train_loop


REWARD_TOKENS = ("answer", "title")


@dataclass
class PreferenceConfig(TrainConfig):
    model: str = opt("", "the SFT checkpoint directory (its 'model' folder); also the frozen reference")
    loss: str = opt("sdpo", "sdpo: Softmax-DPO over K negatives; dpo: sigmoid DPO, one pair per negative",
                    choices=tuple(LOSSES))
    negatives: int = opt(3, "K, negatives per sample, drawn from the prompt's non-target candidates")
    beta: float = opt(1.0, "beta: scale of the implicit reward")
    epochs: int = opt(1, "passes over the training samples")
    reference_pass: str = opt("precompute", "precompute: score each epoch's answers with the reference before "
                              "the epoch, cached on disk, no reference model held while training; online: "
                              "score them batch by batch", choices=("precompute", "online"))
    reference_cache: str = opt("", "directory for cached reference log-probs (default: reference_cache/ "
                               "beside the SFT checkpoint; 'none' to keep them in memory only)")
    negatives_from: str = opt("uniform", "how each sample's K negatives are chosen among its prompt's non-target "
                              "candidates, every epoch: uniform (at random), popular (at random, weighted by how "
                              "often each is a training target) or model (the K the reference, the SFT model, "
                              "scores highest: hard negatives)", choices=NEGATIVE_SOURCES)
    sft_weight: float = opt(0.0, "weight of an SFT term (the chosen answer's per-token loss) added to each "
                            "sample's preference loss, against the chosen answer's likelihood falling")
    reward_tokens: str = opt("answer", "which tokens of an answer its log-prob (and so the implicit reward) sums: "
                             "answer (title + EOS, the paper's) or title (EOS left out: the loss then no longer "
                             "pushes EOS down after every negative's title, which makes generation stop less "
                             "often; bench/answer_split.py measures it)", choices=REWARD_TOKENS)

    def validate(self) -> None:
        require(bool(self.model), "model", "required: the SFT checkpoint to start from")
        self.model = resolve_model(self.model)
        self.domain = recorded_domain(self.model, self.domain)
        default_lr(self, "preference", _backbone(self.model, self.lora))
        super().validate()
        require_outside(self.model, self.out, self.overwrite)
        require_no_4bit_gguf(self.model, self.load_in_4bit)
        require(self.negatives >= 1, "negatives", "must be at least 1")
        require(self.beta > 0, "beta", "must be positive")
        require(self.sft_weight >= 0, "sft_weight", "must not be negative")


def _backbone(model: str, lora: bool) -> str:
    """What preference training trains: `builtin` (an SFT checkpoint of the built-in backbone, all weights),
    `lora` (a new adapter, or the SFT checkpoint's own adapter) or `full` (all weights of a text model)."""
    marker = Path(model) / CODEC_FILE
    kind = read_json_object(marker, "the checkpoint's codec record is damaged").get("kind") if marker.is_file() else None
    if kind == "items" and not lora:
        return "builtin"
    return "lora" if lora or is_adapter(model) else "full"


def run_preference(cfg: PreferenceConfig) -> dict:
    run = start_run(cfg, load_codec_of(cfg.model, cfg.chat_template), cfg.model, cfg.negatives)
    out, train = run.out, run.train
    items = catalogue(train)
    precompute = cfg.reference_pass == "precompute"
    source = start = cfg.model
    if is_gguf(source):   # converted once to a Hugging Face checkpoint, which the policy and reference load
        start = str(out / "base_model")
        if run.main:
            model, codec = load_model(source, cfg.dtype, chat_template=cfg.chat_template)
            save_checkpoint(model, codec, start, {"stage": "base", "trained_from": source})
            del model
        run.acc.wait_for_everyone()
    policy, codec = policy_from_sft(start, cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.dtype,
                                    resident_reference=not precompute, load_in_4bit=cfg.load_in_4bit,
                                    targets=cfg.lora_targets, chat_template=cfg.chat_template)
    device = run.acc.device
    if not cfg.load_in_4bit:
        policy.to(device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(policy.model)
    base_dir = Path(cfg.model) / "base" if is_adapter(cfg.model) and (Path(cfg.model) / "base").is_dir() else None
    if cfg.lora and needs_own_base(source):   # a new adapter over a GGUF model: its base travels with it
        base_dir = Path(start)
    loss_fn, k = LOSSES[cfg.loss], cfg.negatives
    if run.main:
        print(f"{cfg.loss}: {len(train)} training samples, K={k}, beta={cfg.beta}, from {cfg.model}, "
              f"reference {cfg.reference_pass}; {run.acc.num_processes} process(es) on {device}")

    popularity = Counter(s.target for s in train)
    chosen_negatives: dict[str, list[str]] = {}   # this epoch's, where not drawn uniformly

    def answers(s: Sample, epoch: int, every: bool = False) -> list[str]:
        """Training answers: the target, then its K negatives; `every`: the target, then every other candidate."""
        if every:
            return [s.target] + [c for c in s.candidates if c != s.target]
        if cfg.negatives_from == "uniform":
            return [s.target] + draw_negatives(s, k, cfg.seed, epoch)
        return [s.target] + chosen_negatives[s.key]

    cut = -1 if cfg.reward_tokens == "title" else None   # the EOS is the answer's last token

    def layout(samples: Sequence[Sample], epoch: int, every: bool = False) -> AnswerBatch:
        rows = [[codec.encode_answer(t)[:cut] for t in answers(s, epoch, every)] for s in samples]
        return collate([codec.encode_prompt(prompt_for(s, cfg.domain, cfg.seed, epoch)) for s in samples],
                       same_answer_count(rows, codec.pad_id), codec.pad_id)

    reference: dict[str, torch.Tensor] = {}
    beside = Path(cfg.model).parent if Path(cfg.model).is_dir() else out
    cache_dir = None if cfg.reference_cache == "none" else Path(cfg.reference_cache or beside / "reference_cache")
    settings = {"data": file_digest(cfg.train), "model": model_fingerprint(cfg.model), "seed": cfg.seed, "k": k,
                "domain": cfg.domain, "keep_candidates": cfg.keep_candidates, "dtype": cfg.dtype,
                "load_in_4bit": cfg.load_in_4bit, "mixed_precision": cfg.mixed_precision, "layout": cfg.layout,
                "device": device.type, "chat": codec.chat, "codec": codec.kind, "reward_tokens": cfg.reward_tokens}

    def reference_pass(epoch: int, samples: Sequence[Sample], every: bool) -> dict[str, torch.Tensor]:
        """sample key -> the reference's log-probs of `answers(sample, epoch, every)`, cached on disk."""
        inputs = inputs_digest([(prompt_for(s, cfg.domain, cfg.seed, epoch), answers(s, epoch, every))
                                for s in samples])
        key = cache_key(**reference_identity(epoch=epoch, inputs=inputs, **settings))
        rank, world = run.acc.process_index, run.acc.num_processes
        # Each process scores its slice (and caches it under its rank); all of them get every sample's row.
        part = f"{key}.pt" if world == 1 else f"{key}.rank{rank}of{world}.pt"
        mine = reference_logps(policy.reference, even_shard(samples, rank, world)[0],
                               lambda chunk: layout(chunk, epoch, every), cfg.batch_size, device,
                               cache_dir and cache_dir / part, cfg.progress and run.main, layout_fn(cfg.layout))
        return dict(gather(list(mine.items()), world))

    def on_epoch_start(epoch: int, samples: Sequence[Sample]) -> None:
        chosen_negatives.clear()
        reference.clear()
        if cfg.negatives_from == "popular":
            chosen_negatives.update({s.key: popular_negatives(s, k, popularity, cfg.seed, epoch) for s in samples})
        if cfg.negatives_from == "model":   # one pass scores every candidate: the negatives and their references
            scores = reference_pass(epoch, samples, True)
            for s in samples:
                others, row = answers(s, epoch, True)[1:], scores[s.key]
                picked = top_negatives(others, row[1:1 + len(others)].tolist(), k)
                chosen_negatives[s.key] = [others[i] for i in picked]
                if precompute:
                    reference[s.key] = torch.cat([row[:1], row[1:][picked]])
        elif precompute:
            reference.update(reference_pass(epoch, samples, False))

    def make_batch(samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        batch = layout(samples, epoch)
        if reference:
            batch.reference_logps = torch.stack([reference[s.key] for s in samples])
        return batch

    def step(model, batch: AnswerBatch):
        logps, counts = layout_fn(cfg.layout)(model, batch)        # (B, 1+K)
        ref_logps = batch.reference_logps
        if ref_logps is None:
            with policy.reference() as ref:
                ref_logps, _ = layout_fn(cfg.layout)(ref, batch)    # (B, 1+K)
        chosen, rejected = split_chosen_rejected(logps, k)
        ref_chosen, ref_rejected = split_chosen_rejected(ref_logps, k)
        losses, r_chosen, r_rejected = loss_fn(chosen, rejected, ref_chosen, ref_rejected, cfg.beta)
        if cfg.sft_weight:
            losses = losses + cfg.sft_weight * sft_loss(chosen) / counts[:, 0]
        stats = {   # per sample; the loop logs their means over each optimizer step's samples
            "reward_chosen": r_chosen,
            "reward_rejected": r_rejected.mean(1),
            "reward_margin": r_chosen - r_rejected.mean(1),
            "accuracy": (r_chosen > r_rejected.max(1).values).float(),
            "logp_chosen": chosen,
            "logp_rejected": rejected.mean(1),
        }
        return losses, stats

    meta = {"stage": cfg.loss, "trained_from": cfg.model, "config": asdict(cfg)}
    save = lambda trained, state_dict: save_checkpoint(trained, codec, out / "model", meta, base_dir, state_dict)
    return train_loop(cfg, run, policy.model, codec, items, make_batch, step, save, lambda sample: 1, on_epoch_start)
