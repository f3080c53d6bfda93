"""SFT recipe: next-token loss on the answer tokens (title + EOS), optionally on the history too. The `sdporec sft`
command (its config and runner) is `sdporec.commands.sft`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from accelerate.utils import DistributedType

from sdporec.data.batching import IGNORE, AnswerBatch, collate
from sdporec.data.candidates import catalogue
from sdporec.data.codec import ReservedTitle
from sdporec.data.hybrid import HybridCodec, add_item_tokens, item_key
from sdporec.data.prompts import build_prompt, training_prompt
from sdporec.data.samples import Sample
from sdporec.errors import DataError, require
from sdporec.models.builtin import BUILTIN, BuiltinSize, add_hidden_dropout, build_builtin
from sdporec.models.checkpoints import needs_own_base, save_checkpoint
from sdporec.models.item_rows import add_item_rows
from sdporec.models.loading import load_model
from sdporec.models.logprobs import answer_and_prompt_logprobs, history_logprobs
from sdporec.models.lora import add_lora, enable_gradient_checkpointing
from sdporec.models.scoring import scoring_layout
from sdporec.runs import BASE_MODEL
from sdporec.training.losses import sft_loss
from sdporec.training.run import TrainingRun
from sdporec.training.train_config import TrainOptions


class SFTOptions(TrainOptions, Protocol):
    """What SFT reads of its settings beyond the trainer's (`sdporec.commands.sft.SFTConfig` has them all)."""

    model: str
    hidden: int
    layers: int
    heads: int
    dropout: float
    history_weight: float
    history_in: str
    item_tokens: bool
    item_init: str
    item_text: str


class SFTRecipe:
    """SFT for the `Trainer`: each sample's summed answer-token loss (and, with `history_weight`, its
    history's next-item loss), over predicted tokens."""

    def __init__(self, cfg: SFTOptions, codec, checkpoint: Path, base_dir: Path | None, device: str | torch.device):
        self.cfg, self.codec = cfg, codec
        self.checkpoint, self.base_dir = checkpoint, base_dir
        self.score = scoring_layout(cfg.layout, codec.short_answers, device)
        self.meta = {
            "stage": "sft",
            "trained_from": cfg.model,
            "config": asdict(cfg),
            "learned_history": cfg.history_weight > 0,
        }

    def units(self, sample: Sample) -> int:
        """Predicted tokens: the answer's (title + EOS), and with a history loss the history's labelled ones
        (counted in the evaluation prompt: an item title is one token in every template, and a text title's
        tokens change little with the words around it)."""
        answer = len(self.codec.encode_answer(sample.target))
        if not self.cfg.history_weight:
            return answer
        if self.cfg.history_in == "prompt":
            labels = self.codec.encode_prompt_history(
                build_prompt(sample.history, sample.candidates, self.cfg.domain, task=self.cfg.task), IGNORE
            )[1]
        else:
            labels = self.codec.encode_history(sample.history, IGNORE)[1]
        return answer + sum(label != IGNORE for label in labels)

    def start_epoch(self, epoch: int, samples: Sequence[Sample]) -> None:
        pass

    def make_batch(self, samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        cfg, codec = self.cfg, self.codec
        prompts = [training_prompt(s, cfg.domain, cfg.seed, epoch, cfg.task) for s in samples]
        answers = [[codec.encode_answer(s.target)] for s in samples]
        if cfg.history_in == "prompt":  # validate: only with a history weight
            labelled = [codec.encode_prompt_history(p, IGNORE) for p in prompts]
            batch = collate([ids for ids, _ in labelled], answers, codec.pad_id)
            return batch.with_prompt_labels([labels for _, labels in labelled], IGNORE)
        batch = collate([codec.encode_prompt(p) for p in prompts], answers, codec.pad_id)
        if cfg.history_weight:
            batch.with_histories([codec.encode_history(s.history, IGNORE) for s in samples], codec.pad_id, IGNORE)
        return batch

    def losses(self, model, batch: AnswerBatch):
        """Each sample's summed answer-token loss (plus the weighted history loss); the trainer divides by tokens."""
        if batch.prompt_labels is not None:
            logps, history_logps = answer_and_prompt_logprobs(model, batch)
        else:
            logps, history_logps = self.score(model, batch)[0][:, 0], None
            if batch.history_ids is not None:
                history_logps = history_logprobs(model, batch)[0]
        losses = sft_loss(logps)
        if history_logps is None:
            return losses, {}
        return losses + self.cfg.history_weight * sft_loss(history_logps), {"answer_loss": losses.detach()}

    def save(self, model, state_dict: dict | None, readout: float) -> None:
        save_checkpoint(
            model, self.codec, self.checkpoint, {**self.meta, "history_readout": readout}, self.base_dir, state_dict
        )


def sft_model(cfg: SFTOptions, run: TrainingRun, codec, extra: list[str]):
    """The model SFT trains (built-in over the data's titles and `extra`, or loaded; LoRA added when asked),
    its codec, and where a LoRA's base weights are kept beside the adapter (None where its base is loadable
    by name)."""
    base_dir = None
    if cfg.model == BUILTIN:
        try:
            model, codec = build_builtin(
                catalogue(run.train + run.valid) + extra, BuiltinSize(cfg.hidden, cfg.layers, cfg.heads), cfg.seed
            )
        except ReservedTitle as e:
            raise DataError(cfg.train, None, "titles", str(e)) from None
        if cfg.dropout:
            add_hidden_dropout(model, cfg.dropout)
    else:
        model, codec = load_model(cfg.model, cfg.dtype, cfg.load_in_4bit, cfg.chat_template, codec)
    if not cfg.load_in_4bit:  # 4-bit weights are placed on the GPU as they load
        model.to(run.acc.device)
    if cfg.item_tokens:
        require(
            not (cfg.lora and run.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)),
            "item_tokens",
            "peft trains item rows beside a LoRA adapter in one process or under DDP, not under "
            "FSDP or DeepSpeed; train all weights (no --lora) there",
        )
        codec = item_codec(cfg, run, model, codec, extra)
    if cfg.lora:
        # Keep the base weights beside the adapter where they exist nowhere else (new item rows included).
        if needs_own_base(cfg.model) or cfg.item_tokens:
            base_dir = run.out / BASE_MODEL
            if run.main:
                save_checkpoint(model, codec, base_dir, {"stage": "base", "trained_from": cfg.model})
            model.name_or_path = str(base_dir)  # what the adapter's config names as its base
        model = add_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, getattr(codec, "token_ids", ())
        )
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, codec, base_dir


def item_codec(cfg: SFTOptions, run: TrainingRun, model, codec, extra: list[str]) -> HybridCodec:
    """`codec`'s tokenizer with a token per catalogue item (train, valid and `extra`), and `model`'s rows for them."""
    try:
        titles = add_item_tokens(codec.tokenizer, catalogue(run.train + run.valid) + extra)
    except ReservedTitle as e:
        raise DataError(cfg.train, None, "titles", str(e)) from None
    hybrid = HybridCodec(codec.tokenizer, codec.chat, titles, cfg.item_text)
    sequences = [[item_key(t) for t in s.history + [s.target]] for s in run.train]  # as the tokens are named
    add_item_rows(model, hybrid.tokenizer, titles, hybrid.token_ids, cfg.item_init, cfg.domain, sequences)
    return hybrid
