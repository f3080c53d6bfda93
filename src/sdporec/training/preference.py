"""Preference recipe: DPO and Softmax-DPO from an SFT checkpoint, which is also the frozen reference.

Each sample's K negatives are drawn (seeded by sample and epoch) from the non-target candidates of the
prompt the model sees, so they change with every epoch's candidate list. The next-item task shows no list: its
list is still drawn every epoch, uniformly from the catalogue outside the history and target, so its uniform
negatives are uniform over that catalogue; its popular negatives are drawn from the whole catalogue, and its
model-chosen ones are the reference's top K of the whole catalogue where items are tokens (one pass per prompt
scores every item) and of the drawn list where titles are text (the whole catalogue would cost its size in
answers per prompt). The `sdporec dpo` and `sdporec sdpo` commands (their configs and runner) are
`sdporec.commands.preference`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch

from sdporec.data.batching import IGNORE, AnswerBatch, collate, same_answer_count, split_chosen_rejected
from sdporec.data.candidates import (
    catalogue,
    draw_negatives,
    popular_catalogue_negatives,
    popular_negatives,
    top_negatives,
)
from sdporec.data.prompts import training_prompt
from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.lm_catalogue import LMCatalogue, item_ids
from sdporec.evaluation.scoring import LMScorer
from sdporec.models.checkpoints import Checkpoint, is_adapter, needs_own_base, save_checkpoint
from sdporec.models.loading import load_model
from sdporec.models.logprobs import history_logprobs
from sdporec.models.lora import enable_gradient_checkpointing
from sdporec.models.policy import Policy, policy_from_sft
from sdporec.models.scoring import resolve_layout, scoring_layout
from sdporec.models.sources import is_gguf
from sdporec.processes import even_shard, gather
from sdporec.runs import BASE_MODEL, MODEL
from sdporec.training.losses import LOSSES, sft_loss
from sdporec.training.reference import (
    cache_key,
    file_digest,
    inputs_digest,
    model_fingerprint,
    reference_identity,
    reference_logps,
)
from sdporec.training.run import TrainingRun
from sdporec.training.train_config import TrainOptions


class PreferenceOptions(TrainOptions, Protocol):
    """What preference training reads of its settings beyond the trainer's
    (`sdporec.commands.preference.PreferenceConfig` has them all)."""

    model: str
    loss: str
    negatives: int
    beta: float
    reference_pass: str
    reference_cache: str
    negatives_from: str
    sft_weight: float
    history_weight: float
    reward_tokens: str


def learns_history(cfg: PreferenceOptions) -> bool:
    """The policy learns the history's next-item loss: here (`--history-weight`) or in the SFT it starts from."""
    return cfg.history_weight > 0 or Checkpoint.read(cfg.model).learned_history


class PreferenceRecipe:
    """DPO / S-DPO for the `Trainer`: each sample's target and K negatives scored by the policy and the
    reference (precomputed per epoch, or online), the loss over samples."""

    def __init__(self, cfg: PreferenceOptions, run: TrainingRun, policy: Policy, codec, base_dir: Path | None):
        self.cfg, self.run, self.policy, self.codec, self.base_dir = cfg, run, policy, codec, base_dir
        self.k, self.loss_fn, self.score = (
            cfg.negatives,
            LOSSES[cfg.loss],
            scoring_layout(cfg.layout, codec.short_answers, run.acc.device),
        )
        self.precompute = cfg.reference_pass == "precompute"
        self.cut = -1 if cfg.reward_tokens == "title" else None  # the EOS is the answer's last token
        self.popularity = Counter(s.target for s in run.train)
        self.items = catalogue(run.train)
        self.cum_weights = list(itertools.accumulate(1 + self.popularity.get(t, 0) for t in self.items))
        # The next-item task's model-chosen negatives come from the whole catalogue where items are tokens: one
        # column per item token (titles that share a token are one item to the model), named by its first title.
        whole = cfg.negatives_from == "model" and cfg.task == "next-item"
        ids = item_ids(codec, Catalogue(self.items, cfg.train)) if whole else None
        self.item_ids, self.token_titles = (None, []) if ids is None else _one_title_per_token(self.items, ids)
        self.negatives: dict[str, list[str]] = {}  # this epoch's, where not sampled uniformly
        self.reference: dict[str, torch.Tensor] = {}  # this epoch's, when precomputed
        beside = Path(cfg.model).parent if Path(cfg.model).is_dir() else run.out
        self.cache_dir = (
            None if cfg.reference_cache == "none" else Path(cfg.reference_cache or beside / "reference_cache")
        )
        self.settings = {
            "data": file_digest(cfg.train),
            "model": model_fingerprint(cfg.model),
            "seed": cfg.seed,
            "k": self.k,
            "domain": cfg.domain,
            "keep_candidates": cfg.keep_candidates,
            "dtype": cfg.dtype,
            "load_in_4bit": cfg.load_in_4bit,
            "mixed_precision": cfg.mixed_precision,
            "layout": resolve_layout(cfg.layout, run.acc.device, codec.short_answers),
            "device": run.acc.device.type,
            "chat": codec.chat,
            "codec": codec.kind,
            "reward_tokens": cfg.reward_tokens,
        }
        self.meta = {
            "stage": cfg.loss,
            "trained_from": cfg.model,
            "config": asdict(cfg),
            "learned_history": learns_history(cfg),
        }

    def units(self, sample: Sample) -> int:
        return 1  # the preference loss is a mean over samples

    def answers(self, s: Sample, epoch: int, every: bool = False) -> list[str]:
        """Training answers: the target, then its K negatives; `every`: the target, then every other candidate."""
        if every:
            return [s.target] + [c for c in s.candidates if c != s.target]
        if self.cfg.negatives_from == "uniform":
            return [s.target] + draw_negatives(s, self.k, self.cfg.seed, epoch)
        return [s.target] + self.negatives[s.key]

    def encode(self, samples: Sequence[Sample], epoch: int, every: bool = False) -> AnswerBatch:
        codec, cfg = self.codec, self.cfg
        rows = [[codec.encode_answer(t)[: self.cut] for t in self.answers(s, epoch, every)] for s in samples]
        return collate(
            [codec.encode_prompt(training_prompt(s, cfg.domain, cfg.seed, epoch, cfg.task)) for s in samples],
            same_answer_count(rows, codec.pad_id),
            codec.pad_id,
        )

    def reference_pass(self, epoch: int, samples: Sequence[Sample], every: bool) -> dict[str, torch.Tensor]:
        """sample key -> the reference's log-probs of `answers(sample, epoch, every)`, cached on disk. Each
        process scores its slice (and caches it under its rank); all of them get every sample's row."""
        cfg, acc = self.cfg, self.run.acc
        inputs = inputs_digest(
            [
                (training_prompt(s, cfg.domain, cfg.seed, epoch, cfg.task), self.answers(s, epoch, every))
                for s in samples
            ]
        )
        key = cache_key(**reference_identity(epoch=epoch, inputs=inputs, **self.settings))
        rank, world = acc.process_index, acc.num_processes
        part = f"{key}.safetensors" if world == 1 else f"{key}.rank{rank}of{world}.safetensors"
        mine = reference_logps(
            self.policy.reference,
            even_shard(samples, rank, world)[0],
            lambda chunk: self.encode(chunk, epoch, every),
            cfg.batch_size,
            acc.device,
            self.cache_dir and self.cache_dir / part,
            cfg.progress and self.run.main,
            self.score,
        )
        return dict(gather(list(mine.items()), world))

    def start_epoch(self, epoch: int, samples: Sequence[Sample]) -> None:
        """This epoch's negatives where not uniform, and the reference's log-probs when precomputed."""
        cfg, k = self.cfg, self.k
        self.negatives.clear()
        self.reference.clear()
        if cfg.negatives_from == "popular" and cfg.task == "next-item":  # no list shown: the whole catalogue's
            items, weights = self.items, self.cum_weights
            self.negatives.update(
                {s.key: popular_catalogue_negatives(s, k, items, weights, cfg.seed, epoch) for s in samples}
            )
        elif cfg.negatives_from == "popular":
            self.negatives.update({s.key: popular_negatives(s, k, self.popularity, cfg.seed, epoch) for s in samples})
        if self.item_ids is not None:  # one pass per prompt scores every item; a second the chosen answers
            self.negatives.update(self.hardest_of_catalogue(epoch, samples))
            if self.precompute:
                self.reference.update(self.reference_pass(epoch, samples, False))
        elif cfg.negatives_from == "model":  # one pass scores every candidate: the negatives and their references
            scores = self.reference_pass(epoch, samples, True)
            for s in samples:
                others, row = self.answers(s, epoch, True)[1:], scores[s.key]
                picked = top_negatives(others, row[1 : 1 + len(others)].tolist(), k)
                self.negatives[s.key] = [others[i] for i in picked]
                if self.precompute:
                    self.reference[s.key] = torch.cat([row[:1], row[1:][picked]])
        elif self.precompute:
            self.reference.update(self.reference_pass(epoch, samples, False))

    def hardest_of_catalogue(self, epoch: int, samples: Sequence[Sample]) -> dict[str, list[str]]:
        """sample key -> the K items of the training catalogue outside its history and target that the reference
        scores highest after this epoch's prompt (log p(item | prompt), as `evaluate --candidates all` ranks them
        with the prompt alone). Each process scores its slice; all of them get every sample's negatives."""
        cfg, acc, codec = self.cfg, self.run.acc, self.codec
        mine = even_shard(samples, acc.process_index, acc.num_processes)[0]
        out = []
        with self.policy.reference() as ref:
            scorer = LMCatalogue(LMScorer(ref, codec, cfg.domain, cfg.batch_size, progress=False, task=cfg.task))
            for start in range(0, len(mine), cfg.batch_size):
                part = mine[start : start + cfg.batch_size]
                prompts = [codec.encode_prompt(training_prompt(s, cfg.domain, cfg.seed, epoch, cfg.task)) for s in part]
                scores = scorer.item_scores(prompts, self.item_ids)
                negatives = hardest_negatives(scores, part, codec.title_id, self.item_ids, self.token_titles, self.k)
                out += [(s.key, row) for s, row in zip(part, negatives)]
        return dict(gather(out, acc.num_processes))

    def make_batch(self, samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        batch = self.encode(samples, epoch)
        if self.reference:
            batch.reference_logps = torch.stack([self.reference[s.key] for s in samples])
        if self.cfg.history_weight:
            codec = self.codec
            batch.with_histories([codec.encode_history(s.history, IGNORE) for s in samples], codec.pad_id, IGNORE)
        return batch

    def losses(self, model, batch: AnswerBatch):
        logps, counts = self.score(model, batch)  # (B, 1+K)
        ref_logps = batch.reference_logps
        if ref_logps is None:
            with self.policy.reference() as ref:
                ref_logps, _ = self.score(ref, batch)  # (B, 1+K)
        chosen, rejected = split_chosen_rejected(logps, self.k)
        ref_chosen, ref_rejected = split_chosen_rejected(ref_logps, self.k)
        losses, r_chosen, r_rejected = self.loss_fn(chosen, rejected, ref_chosen, ref_rejected, self.cfg.beta)
        if self.cfg.sft_weight:
            losses = losses + self.cfg.sft_weight * sft_loss(chosen) / counts[:, 0]
        history_loss = None
        if batch.history_ids is not None:  # the history's next-item loss per labelled token
            history, labelled = history_logprobs(model, batch)
            history_loss = sft_loss(history) / labelled.clamp(min=1)
            losses = losses + self.cfg.history_weight * history_loss
        stats = {  # per sample; the trainer logs their means over each optimizer step's samples
            "reward_chosen": r_chosen,
            "reward_rejected": r_rejected.mean(1),
            "reward_margin": r_chosen - r_rejected.mean(1),
            "accuracy": (r_chosen > r_rejected.max(1).values).float(),
            "logp_chosen": chosen,
            "logp_rejected": rejected.mean(1),
        }
        if history_loss is not None:
            stats["history_loss"] = history_loss.detach()
        return losses, stats

    def save(self, model, state_dict: dict | None, readout: float) -> None:
        save_checkpoint(
            model,
            self.codec,
            self.run.out / MODEL,
            {**self.meta, "history_readout": readout},
            self.base_dir,
            state_dict,
        )


def _one_title_per_token(titles: Sequence[str], ids: Sequence[int]) -> tuple[list[int], list[str]]:
    """The distinct item tokens of `ids` in catalogue order, each with the first of `titles` that has it."""
    first: dict[int, str] = {}
    for title, token in zip(titles, ids):
        first.setdefault(token, title)
    return list(first), list(first.values())


def hardest_negatives(
    scores: torch.Tensor, samples: Sequence[Sample], title_id, ids: Sequence[int], titles: Sequence[str], k: int
) -> list[list[str]]:
    """Each sample's K negatives from `scores` (samples x the item tokens `ids`, each named by `titles`): the items
    scored highest but the tokens of its history and target (`title_id`: title -> token), whatever title names them."""
    column = {token: c for c, token in enumerate(ids)}
    excluded = [{column[title_id(t)] for t in (*s.history, s.target)} for s in samples]
    return [[titles[c] for c in row] for row in hardest_items(scores, excluded, k)]


def hardest_items(scores: torch.Tensor, excluded: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Per row of `scores` (samples x catalogue items), the indices of its K highest-scored items outside the row's
    `excluded` ones (its history and target), highest first, ties by catalogue order."""
    masked = scores.clone()
    for row, out in zip(masked, excluded):
        row[list(out)] = float("-inf")
    kept = len(scores[0]) - max(map(len, excluded), default=0)
    if kept < k:
        raise ValueError(f"a sample has {kept} catalogue items outside its history and target, fewer than K={k}")
    return masked.sort(dim=1, descending=True, stable=True).indices[:, :k].tolist()


def preference_policy(cfg: PreferenceOptions, run: TrainingRun) -> tuple[Policy, object, Path | None]:
    """The policy and its reference from the SFT checkpoint (a GGUF file converted once to a Hugging Face
    checkpoint first), its codec, and where a LoRA's base weights are kept beside the adapter."""
    source = start = cfg.model
    if is_gguf(source):  # converted once to a Hugging Face checkpoint, which the policy and reference load
        start = str(run.out / BASE_MODEL)
        if run.main:
            model, codec = load_model(source, cfg.dtype, chat_template=cfg.chat_template)
            save_checkpoint(model, codec, start, {"stage": "base", "trained_from": source})
            del model
        run.acc.wait_for_everyone()
    policy, codec = policy_from_sft(
        start,
        cfg.lora,
        cfg.lora_r,
        cfg.lora_alpha,
        cfg.lora_dropout,
        cfg.dtype,
        resident_reference=cfg.reference_pass != "precompute",
        load_in_4bit=cfg.load_in_4bit,
        targets=cfg.lora_targets,
        chat_template=cfg.chat_template,
    )
    if not cfg.load_in_4bit:
        policy.to(run.acc.device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(policy.model)
    base_dir = Path(cfg.model) / "base" if is_adapter(cfg.model) and (Path(cfg.model) / "base").is_dir() else None
    if cfg.lora and needs_own_base(source):  # a new adapter over a GGUF model: its base travels with it
        base_dir = Path(start)
    return policy, codec, base_dir
