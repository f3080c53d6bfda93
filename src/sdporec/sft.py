"""SFT recipe: next-token loss on the answer tokens (target title + EOS) only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from .batching import AnswerBatch, collate
from .candidates import catalogue, sample_rng
from .codec import ReservedTitle
from .config import opt, require, require_input, require_outside
from .logprobs import IGNORE, layout_fn, sequence_logprobs
from .losses import sft_loss
from .modeling import (BUILTIN, BuiltinSize, add_lora, build_builtin, enable_gradient_checkpointing, load_codec_of,
                       load_model, needs_own_base, recorded_domain, save_checkpoint)
from .prompts import build_prompt, pick_template
from .samples import DataError, Sample, read_text
from .sources import require_no_4bit_gguf, resolve_model
from .trainer import TrainConfig, default_lr, start_run, train_loop


@dataclass
class SFTConfig(TrainConfig):
    model: str = opt(BUILTIN, "'builtin' (a small item-token Llama built here) or a checkpoint directory / hub name")
    titles: str = opt("", "file with one title per line, added to the built-in vocabulary")
    hidden: int = opt(128, "built-in backbone: hidden size")
    layers: int = opt(2, "built-in backbone: layers")
    heads: int = opt(4, "built-in backbone: attention heads")
    history_weight: float = opt(0.0, "weight of a next-item loss on each sample's history, run as its own short "
                                "sequence: every title after the first predicted from those before it, as SASRec "
                                "learns (0: the answer's loss only)")

    def validate(self) -> None:
        if self.model != BUILTIN:
            self.model = resolve_model(self.model)
        self.domain = recorded_domain(self.model, self.domain)
        default_lr(self, "sft", "builtin" if self.model == BUILTIN else "lora" if self.lora else "full")
        super().validate()
        require_input(self.titles, "titles")
        require_no_4bit_gguf(self.model, self.load_in_4bit)
        require_outside(self.model, self.out, self.overwrite)
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")
        require(self.history_weight >= 0, "history_weight", "must not be negative")


def prompt_for(sample: Sample, domain: str, seed: int, epoch: int):
    """Training prompts draw their template per sample and epoch from a seeded generator."""
    template = pick_template(domain, sample_rng(seed, "template", sample.key, epoch))
    return build_prompt(sample.history, sample.candidates, domain, template)


def run_sft(cfg: SFTConfig) -> dict:
    extra = [t.strip() for t in read_text(cfg.titles).splitlines() if t.strip()] if cfg.titles else []
    codec = None if cfg.model == BUILTIN else load_codec_of(cfg.model, cfg.chat_template)
    run = start_run(cfg, codec, cfg.model)
    out, train, valid = run.out, run.train, run.valid
    items = catalogue(train)
    base_dir = None
    if cfg.model == BUILTIN:
        try:
            model, codec = build_builtin(catalogue(train + valid) + extra,
                                         BuiltinSize(cfg.hidden, cfg.layers, cfg.heads), cfg.seed)
        except ReservedTitle as e:
            raise DataError(cfg.train, None, "titles", str(e)) from None
    else:
        model, codec = load_model(cfg.model, cfg.dtype, cfg.load_in_4bit, cfg.chat_template, codec)
    if not cfg.load_in_4bit:   # 4-bit weights are placed on the GPU as they load
        model.to(run.acc.device)
    if cfg.lora:
        if needs_own_base(cfg.model):   # keep the base weights beside the adapter
            base_dir = out / "base_model"
            if run.main:
                save_checkpoint(model, codec, base_dir, {"stage": "base", "trained_from": cfg.model})
            model.name_or_path = str(base_dir)   # what the adapter's config names as its base
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if run.main:
        print(f"sft: {len(train)} training samples, {len(valid)} validation; {n_params:,} parameters "
              f"({n_train:,} trained); codec {codec.kind}{' (chat template)' if codec.chat else ''}; "
              f"{run.acc.num_processes} process(es) on "
              f"{run.acc.device}, mixed precision {cfg.mixed_precision}")

    def make_batch(samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        batch = collate([codec.encode_prompt(prompt_for(s, cfg.domain, cfg.seed, epoch)) for s in samples],
                        [[codec.encode_answer(s.target)] for s in samples], codec.pad_id)
        if cfg.history_weight:
            batch.with_histories([codec.encode_history(s.history, IGNORE) for s in samples], codec.pad_id, IGNORE)
        return batch

    def step(model, batch: AnswerBatch):
        logps, _ = layout_fn(cfg.layout)(model, batch)
        losses = sft_loss(logps[:, 0])     # each sample's summed answer-token loss; the loop divides by tokens
        if not cfg.history_weight:
            return losses, {}
        history = model(input_ids=batch.history_ids, attention_mask=batch.history_mask).logits
        history_logps, _ = sequence_logprobs(history, batch.history_labels)
        return losses + cfg.history_weight * sft_loss(history_logps), {"answer_loss": losses.detach()}

    def units(sample: Sample) -> int:
        """Predicted tokens: the answer's (title + EOS), and with a history loss the history's labelled ones.
        SFT's loss is a mean over the global batch's predicted tokens."""
        answer = len(codec.encode_answer(sample.target))
        if not cfg.history_weight:
            return answer
        return answer + sum(label != IGNORE for label in codec.encode_history(sample.history, IGNORE)[1])

    meta = {"stage": "sft", "trained_from": cfg.model, "config": asdict(cfg)}
    save = lambda trained, state_dict: save_checkpoint(trained, codec, out / "model", meta, base_dir, state_dict)
    return train_loop(cfg, run, model, codec, items, make_batch, step, save, units)
