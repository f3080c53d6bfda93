"""What the trainer needs of a run's settings (`TrainOptions`: the training commands' configs, or any
dataclass with these fields), what a training run writes, and the default learning rates."""

from __future__ import annotations

from typing import Protocol


class TrainOptions(Protocol):
    """The settings of a training run that the `Trainer`, the run log and the recipes read
    (`sdporec.commands.train_config.TrainConfig` has them all, with their flags and help). Saved with the run
    as `config.yaml` (a dataclass)."""

    train: str
    valid: str
    out: str
    domain: str | None
    task: str | None
    epochs: int
    batch_size: int
    grad_accum: int
    lr: float | None
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    eval_every: int
    eval_samples: int
    history_readouts: list[float]
    log_every: int
    keep_candidates: bool
    lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: list[str]
    dtype: str
    mixed_precision: str
    load_in_4bit: bool
    gradient_checkpointing: bool
    chat_template: str
    layout: str
    save_every: int
    resume: bool
    overwrite: bool
    device: str
    threads: int
    seed: int
    progress: bool
    report_to: str


# Peak learning rates when `--lr` is not given, by stage and by what is trained: the built-in backbone
# (all weights), a LoRA adapter on a pretrained model, or all weights of a pretrained model. The built-in
# values were chosen on LastFM and MovieLens, LoRA SFT's on SmolLM2-135M (README, "Little data"); LoRA
# preference training and full fine-tuning of a pretrained model take the field's usual orders of magnitude
# (not measured here).
DEFAULT_LR = {
    ("sft", "builtin"): 1e-3,
    ("sft", "lora"): 1e-3,
    ("sft", "full"): 2e-5,
    ("preference", "builtin"): 5e-4,
    ("preference", "lora"): 1e-4,
    ("preference", "full"): 5e-6,
}


# Settings added after runs were written, with what such a run did: it resumes under them unchanged.
SINCE = {"task": "candidates"}

# Settings that may change between an interrupted run and its resumption (out: a run folder may be moved or copied).
RESUMABLE = {"resume", "overwrite", "progress", "threads", "report_to", "device", "trust_remote_code", "out"}
