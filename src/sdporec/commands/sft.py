"""`sdporec sft`: supervised fine-tuning (`SFTConfig`, `run_sft`); the recipe is `sdporec.training.sft`."""

from __future__ import annotations

from dataclasses import dataclass

from sdporec.commands.settings import setting
from sdporec.commands.train_config import TrainConfig, default_lr, default_readouts
from sdporec.config import require_input
from sdporec.data.batching import IGNORE
from sdporec.data.candidates import catalogue
from sdporec.data.hybrid import ITEM_TEXT
from sdporec.data.prompts import build_prompt
from sdporec.errors import ConfigError, require
from sdporec.files import read_text, text_lines
from sdporec.models.builtin import BUILTIN
from sdporec.models.checkpoints import Checkpoint
from sdporec.models.item_rows import ITEM_INIT
from sdporec.models.loading import load_codec_of
from sdporec.models.sources import require_no_4bit_gguf, resolve_model
from sdporec.outputs import require_apart
from sdporec.runs import MODEL
from sdporec.training.run import start_run
from sdporec.training.sft import SFTRecipe, sft_model
from sdporec.training.trainer import Trainer

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
    dropout: float = setting(
        0.0,
        "built-in backbone: dropout on the embeddings and on each attention and MLP "
        "block's output during SFT, where SASRec has it (0: none; later stages train without it)",
    )
    history_weight: float = setting(
        0.0,
        "weight of a next-item loss on each sample's history, run as its own short "
        "sequence: every title after the first predicted from those before it, as SASRec "
        "learns (0: the answer's loss only)",
    )
    history_in: str = setting(
        "sequence",
        "where the history loss is put: 'sequence' (the history as its own "
        "short sequence, a second forward pass) or 'prompt' (on the history titles inside "
        "the training prompt, in the answer's forward pass)",
        choices=HISTORY_IN,
    )
    item_tokens: bool = setting(
        False,
        "pretrained models: add one token per catalogue item (the titles of --train, "
        "--valid and --titles) to the tokenizer and the embeddings; answers become the "
        "item's token then EOS, and a candidate list is scored from one position",
    )
    item_init: str = setting(
        "mean",
        "with --item-tokens, each new embedding row starts as: mean (the mean of the "
        "title's own token embeddings), hidden (the model's last hidden state of the title "
        "in a short sentence, scaled to the embeddings' norm) or cooc (the mean row plus the "
        "item's co-occurrence vector from the training histories: items that share users "
        "start close; its dense item x item "
        "factoring grows as the cube of the catalogue)",
        choices=ITEM_INIT,
    )
    item_text: str = setting(
        "title",
        "with --item-tokens, how the prompt shows each item: title (its title, then "
        "its token) or token (the token alone: shorter prompts)",
        choices=ITEM_TEXT,
    )

    def check(self) -> None:
        super().check()
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")
        require(self.history_weight >= 0, "history_weight", "must not be negative")
        require(
            self.history_in == "sequence" or self.history_weight > 0,
            "history_in",
            "'prompt' puts the history loss inside the prompt: it needs --history-weight above 0",
        )
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        require(
            not self.item_tokens or self.model != BUILTIN,
            "item_tokens",
            "the built-in backbone has a token "
            "per item already; --item-tokens adds them to a pretrained model (--model)",
        )
        for name, default in (("item_init", "mean"), ("item_text", "title")):
            require(self.item_tokens or getattr(self, name) == default, name, "applies with --item-tokens only")
        require(
            not (self.item_tokens and self.load_in_4bit),
            "load_in_4bit",
            "a 4-bit base cannot take new item "
            "rows (they would be saved quantised with it); use --lora without --load-in-4bit",
        )
        require(
            not (self.item_tokens and self.history_in == "prompt" and self.item_text == "title"),
            "history_in",
            "with --item-text title each history item's token follows its own title, so labelling it teaches "
            "copying, not the next item; use --item-text token or --history-in sequence",
        )
        require(
            not self.dropout or self.model == BUILTIN,
            "dropout",
            "applies to the built-in backbone only (a LoRA adapter has --lora-dropout)",
        )

    def resolve(self) -> None:
        if self.model != BUILTIN:
            self.model = resolve_model(self.model)
        record = Checkpoint.read(self.model)
        self.domain, self.task = record.domain(self.domain), record.task(self.task)
        default_lr(self, "sft", "builtin" if self.model == BUILTIN else "lora" if self.lora else "full")
        super().resolve()
        require_input(self.titles, "titles")
        require_no_4bit_gguf(self.model, self.load_in_4bit)
        require_apart(self.out, {"model": self.model, "titles": self.titles})
        default_readouts(self, self.history_weight > 0)


def run_sft(cfg: SFTConfig) -> dict:
    """Set-up (data, model), then the trainer with the SFT recipe."""
    extra = [t.strip() for t in text_lines(read_text(cfg.titles)) if t.strip()] if cfg.titles else []
    codec = None if cfg.model == BUILTIN else load_codec_of(cfg.model, cfg.chat_template)
    if cfg.item_tokens and codec.kind != "text":
        raise ConfigError(
            f"setting 'item_tokens': {cfg.model} has item tokens already (codec {codec.kind}); "
            "drop --item-tokens to train it further"
        )
    if codec is not None and cfg.history_in == "prompt" and not cfg.item_tokens:  # item tokens need no offsets
        try:  # a tokenizer without offsets, or a chat template that rewrites the prompt: say so before writing
            codec.encode_prompt_history(build_prompt(["A", "B"], ["C"], cfg.domain, task=cfg.task), IGNORE)
        except ValueError as e:
            raise ConfigError(f"setting 'history_in': {e}") from None
    run = start_run(cfg, codec, cfg.model)  # checks the data, then writes the run directory
    with run.setting_up(cfg):
        model, codec, base_dir = sft_model(cfg, run, codec, extra)
        recipe = SFTRecipe(cfg, codec, run.out / MODEL, base_dir, run.acc.device)
        trainer = Trainer(cfg, run, model, codec, catalogue(run.train), recipe)
    if run.main:
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"sft: {len(run.train)} training samples, {len(run.valid)} validation; {n_params:,} parameters "
            f"({n_train:,} trained); codec {codec.kind}{' (chat template)' if codec.chat else ''}; "
            f"{run.acc.num_processes} process(es) on {run.acc.device}, mixed precision {cfg.mixed_precision}"
        )
    return run.fit(trainer.fit)
