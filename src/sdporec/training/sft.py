"""SFT recipe: next-token loss on the answer tokens (title + EOS), optionally on the history too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate.utils import DistributedType

from sdporec.config import require_input, setting
from sdporec.data.batching import AnswerBatch, collate
from sdporec.data.candidates import catalogue
from sdporec.data.codec import ReservedTitle
from sdporec.data.hybrid import ITEM_TEXT, HybridCodec, add_item_tokens
from sdporec.data.prompts import build_prompt, training_prompt
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, DataError, require
from sdporec.files import read_text, text_lines
from sdporec.models.builtin import BUILTIN, BuiltinSize, add_hidden_dropout, build_builtin
from sdporec.models.checkpoints import Checkpoint, needs_own_base, save_checkpoint
from sdporec.models.item_rows import ITEM_INIT, add_item_rows
from sdporec.models.loading import load_codec_of, load_model
from sdporec.models.logprobs import IGNORE, answer_and_prompt_logprobs, history_logprobs
from sdporec.models.lora import add_lora, enable_gradient_checkpointing
from sdporec.models.scoring import scoring_layout
from sdporec.models.sources import require_no_4bit_gguf, resolve_model
from sdporec.outputs import require_outside
from sdporec.training.losses import sft_loss
from sdporec.training.train_config import TrainConfig, default_lr, default_readouts
from sdporec.training.trainer import Trainer, TrainingRun, start_run

HISTORY_IN = ("sequence", "prompt")


@dataclass
class SFTConfig(TrainConfig):
    model: str = setting(
        BUILTIN, "'builtin' (a small item-token Llama built here) or a checkpoint directory / hub name"
    )
    titles: str = setting("", "file with one title per line, added to the built-in vocabulary")
    hidden: int = setting(128, "built-in backbone: hidden size")
    layers: int = setting(2, "built-in backbone: layers")
    heads: int = setting(4, "built-in backbone: attention heads")
    dropout: float = setting(0.0, "built-in backbone: dropout on the embeddings and on each attention and MLP "
                         "block's output during SFT, where SASRec has it (0: none; later stages train without it)")
    history_weight: float = setting(0.0, "weight of a next-item loss on each sample's history, run as its own short "
                                "sequence: every title after the first predicted from those before it, as SASRec "
                                "learns (0: the answer's loss only)")
    history_in: str = setting("sequence", "where the history loss is put: 'sequence' (the history as its own "
                              "short sequence, a second forward pass) or 'prompt' (on the history titles inside "
                              "the training prompt, in the answer's forward pass)", choices=HISTORY_IN)
    item_tokens: bool = setting(False, "pretrained models: add one token per catalogue item (the titles of --train, "
                                "--valid and --titles) to the tokenizer and the embeddings; answers become the "
                                "item's token then EOS, and a candidate list is scored from one position")
    item_init: str = setting("mean", "with --item-tokens, each new embedding row starts as: mean (the mean of the "
                             "title's own token embeddings) or hidden (the model's last hidden state of the title "
                             "in a short sentence, scaled to the embeddings' norm)", choices=ITEM_INIT)
    item_text: str = setting("title", "with --item-tokens, how the prompt shows each item: title (its title, then "
                             "its token) or token (the token alone: shorter prompts)", choices=ITEM_TEXT)

    def validate(self) -> None:
        if self.model != BUILTIN:
            self.model = resolve_model(self.model)
        self.domain = Checkpoint.read(self.model).domain(self.domain)
        default_lr(self, "sft", "builtin" if self.model == BUILTIN else "lora" if self.lora else "full")
        super().validate()
        require_input(self.titles, "titles")
        require_no_4bit_gguf(self.model, self.load_in_4bit)
        require_outside(self.model, self.out, self.overwrite)
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")
        require(self.history_weight >= 0, "history_weight", "must not be negative")
        require(self.history_in == "sequence" or self.history_weight > 0, "history_in",
                "'prompt' puts the history loss inside the prompt: it needs --history-weight above 0")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        require(not self.item_tokens or self.model != BUILTIN, "item_tokens", "the built-in backbone has a token "
                "per item already; --item-tokens adds them to a pretrained model (--model)")
        for name, default in (("item_init", "mean"), ("item_text", "title")):
            require(self.item_tokens or getattr(self, name) == default, name, "applies with --item-tokens only")
        require(not (self.item_tokens and self.load_in_4bit), "load_in_4bit", "a 4-bit base cannot take new item "
                "rows (they would be saved quantised with it); use --lora without --load-in-4bit")
        require(not (self.item_tokens and self.history_in == "prompt" and self.item_text == "title"), "history_in",
                "with --item-text title each history item's token follows its own title, so labelling it teaches "
                "copying, not the next item; use --item-text token or --history-in sequence")
        require(not self.dropout or self.model == BUILTIN, "dropout", "applies to the built-in backbone only (a LoRA "
                "adapter has --lora-dropout)")


class SFTRecipe:
    """SFT for the `Trainer`: each sample's summed answer-token loss (and, with `history_weight`, its
    history's next-item loss), over predicted tokens."""

    def __init__(self, cfg: SFTConfig, codec, checkpoint: Path, base_dir: Path | None):
        self.cfg, self.codec = cfg, codec
        self.checkpoint, self.base_dir = checkpoint, base_dir
        self.score = scoring_layout(cfg.layout, codec.short_answers)
        self.meta = {"stage": "sft", "trained_from": cfg.model, "config": asdict(cfg),
                     "learned_history": cfg.history_weight > 0}

    def units(self, sample: Sample) -> int:
        """Predicted tokens: the answer's (title + EOS), and with a history loss the history's labelled ones
        (counted in the evaluation prompt: an item title is one token in every template, and a text title's
        tokens change little with the words around it)."""
        answer = len(self.codec.encode_answer(sample.target))
        if not self.cfg.history_weight:
            return answer
        if self.cfg.history_in == "prompt":
            labels = self.codec.encode_prompt_history(build_prompt(sample.history, sample.candidates,
                                                                   self.cfg.domain), IGNORE)[1]
        else:
            labels = self.codec.encode_history(sample.history, IGNORE)[1]
        return answer + sum(label != IGNORE for label in labels)

    def start_epoch(self, epoch: int, samples: Sequence[Sample]) -> None:
        pass

    def make_batch(self, samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        cfg, codec = self.cfg, self.codec
        prompts = [training_prompt(s, cfg.domain, cfg.seed, epoch) for s in samples]
        answers = [[codec.encode_answer(s.target)] for s in samples]
        if cfg.history_in == "prompt":   # validate: only with a history weight
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
        save_checkpoint(model, self.codec, self.checkpoint, {**self.meta, "history_readout": readout}, self.base_dir,
                        state_dict)


def sft_model(cfg: SFTConfig, run: TrainingRun, codec, extra: list[str]):
    """The model SFT trains (built-in over the data's titles and `extra`, or loaded; LoRA added when asked),
    its codec, and where a LoRA's base weights are kept beside the adapter (None where its base is loadable
    by name)."""
    base_dir = None
    if cfg.model == BUILTIN:
        try:
            model, codec = build_builtin(catalogue(run.train + run.valid) + extra,
                                         BuiltinSize(cfg.hidden, cfg.layers, cfg.heads), cfg.seed)
        except ReservedTitle as e:
            raise DataError(cfg.train, None, "titles", str(e)) from None
        if cfg.dropout:
            add_hidden_dropout(model, cfg.dropout)
    else:
        model, codec = load_model(cfg.model, cfg.dtype, cfg.load_in_4bit, cfg.chat_template, codec)
    if not cfg.load_in_4bit:   # 4-bit weights are placed on the GPU as they load
        model.to(run.acc.device)
    if cfg.item_tokens:
        require(not (cfg.lora and run.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)),
                "item_tokens", "peft trains item rows beside a LoRA adapter in one process or under DDP, not under "
                "FSDP or DeepSpeed; train all weights (no --lora) there")
        codec = item_codec(cfg, run, model, codec, extra)
    if cfg.lora:
        # Keep the base weights beside the adapter where they exist nowhere else (new item rows included).
        if needs_own_base(cfg.model) or cfg.item_tokens:
            base_dir = run.out / "base_model"
            if run.main:
                save_checkpoint(model, codec, base_dir, {"stage": "base", "trained_from": cfg.model})
            model.name_or_path = str(base_dir)   # what the adapter's config names as its base
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets,
                         getattr(codec, "token_ids", ()))
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, codec, base_dir


def item_codec(cfg: SFTConfig, run: TrainingRun, model, codec, extra: list[str]) -> HybridCodec:
    """`codec`'s tokenizer with a token per catalogue item (train, valid and `extra`), and `model`'s rows for them."""
    try:
        titles = add_item_tokens(codec.tokenizer, catalogue(run.train + run.valid) + extra)
    except ReservedTitle as e:
        raise DataError(cfg.train, None, "titles", str(e)) from None
    hybrid = HybridCodec(codec.tokenizer, codec.chat, titles, cfg.item_text)
    add_item_rows(model, hybrid.tokenizer, titles, hybrid.token_ids, cfg.item_init, cfg.domain)
    return hybrid


def run_sft(cfg: SFTConfig) -> dict:
    """Set-up (data, model), then the trainer with the SFT recipe."""
    default_readouts(cfg, cfg.history_weight > 0)
    extra = [t.strip() for t in text_lines(read_text(cfg.titles)) if t.strip()] if cfg.titles else []
    codec = None if cfg.model == BUILTIN else load_codec_of(cfg.model, cfg.chat_template)
    if cfg.item_tokens and codec.kind != "text":
        raise ConfigError(f"setting 'item_tokens': {cfg.model} has item tokens already (codec {codec.kind}); "
                          "drop --item-tokens to train it further")
    if codec is not None and cfg.history_in == "prompt" and not cfg.item_tokens:   # item tokens need no offsets
        try:   # a tokenizer without offsets, or a chat template that rewrites the prompt: say so before writing
            codec.encode_prompt_history(build_prompt(["A", "B"], ["C"], cfg.domain), IGNORE)
        except ValueError as e:
            raise ConfigError(f"setting 'history_in': {e}") from None
    run = start_run(cfg, codec, cfg.model)   # checks the data, then writes the run directory
    with run.setting_up(cfg):
        model, codec, base_dir = sft_model(cfg, run, codec, extra)
        recipe = SFTRecipe(cfg, codec, run.out / "model", base_dir)
        trainer = Trainer(cfg, run, model, codec, catalogue(run.train), recipe)
    if run.main:
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"sft: {len(run.train)} training samples, {len(run.valid)} validation; {n_params:,} parameters "
              f"({n_train:,} trained); codec {codec.kind}{' (chat template)' if codec.chat else ''}; "
              f"{run.acc.num_processes} process(es) on {run.acc.device}, mixed precision {cfg.mixed_precision}")
    return trainer.fit()
