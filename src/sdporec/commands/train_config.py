"""The settings every training command shares (`TrainConfig`, which `SFTConfig` and the preference configs
extend), and the defaults filled in as a run's config is made ready (learning rate, history readouts)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sdporec.commands.groups import (
    chat_template_setting,
    check_threads,
    device_setting,
    dtype_setting,
    layout_setting,
    load_in_4bit_setting,
    progress_setting,
    report_to_setting,
    require_backend,
    threads_setting,
    trust_remote_code_setting,
)
from sdporec.commands.settings import setting
from sdporec.config import require_cuda_for_4bit, require_device, require_input
from sdporec.data.prompts import DOMAINS, TASKS
from sdporec.errors import require
from sdporec.outputs import claim_out_dir, require_apart
from sdporec.runs import TRAINING_FILES
from sdporec.training.train_config import DEFAULT_LR


@dataclass
class TrainConfig:
    train: str = setting("", "training samples: the paper's JSON array or JSON Lines")
    valid: str = setting("", "validation samples, for HR@1 during training and the best checkpoint")
    out: str = setting("", "output directory (created)")
    domain: str | None = setting(
        None,
        "prompt templates to use (default: those the starting checkpoint was trained with, else music)",
        choices=DOMAINS,
    )
    task: str | None = setting(
        None,
        "candidates: the prompt lists the candidates and the answer is the one picked (the paper's); next-item: the "
        "prompt shows the history alone and the answer is the next item, from the whole catalogue; preference "
        "training's negatives come from the catalogue then (default: the starting checkpoint's task, else candidates)",
        choices=TASKS,
    )
    epochs: int = setting(3, "passes over the training samples")
    batch_size: int = setting(16, "samples per micro-batch")
    grad_accum: int = setting(1, "micro-batches per optimizer step (effective batch = batch_size x grad_accum)")
    lr: float | None = setting(
        None,
        "peak learning rate (unset: the default for the stage and backbone, "
        "DEFAULT_LR in training/train_config.py; the value used is printed and saved in config.yaml)",
    )
    warmup_ratio: float = setting(0.05, "share of optimizer steps spent warming up, then cosine decay")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping norm")
    eval_every: int = setting(0, "validate every N optimizer steps (0: at the end of each epoch only)")
    eval_samples: int = setting(
        500,
        "validation samples used during training, a seeded random subset across users, "
        "the same for every stage and seed on the same file (0: all)",
    )
    history_readouts: list[float] = setting(
        [],
        "weights λ of the history readout (see `evaluate --history-readout`) tried at every validation: the "
        "checkpoint is chosen on the best of them, and that λ is saved with the model as the one `evaluate` and "
        "`recommend` rank with unless told otherwise (default: 0 0.25 0.5 0.75 1 where the model learns the "
        "history, --history-weight above 0 here or in the SFT it starts from, and --valid is given; else 0, the "
        "prompt alone)",
    )
    log_every: int = setting(10, "write a log line every N optimizer steps")
    keep_candidates: bool = setting(False, "keep the file's candidate lists instead of re-drawing them every epoch")
    lora: bool = setting(False, "train a LoRA adapter instead of all weights")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    lora_dropout: float = setting(0.05, "LoRA dropout")
    lora_targets: list[str] = setting(
        [], "LoRA target module names (default: every linear layer of the attention and MLP blocks, found per model)"
    )
    dtype: str = dtype_setting()
    mixed_precision: str = setting(
        "no",
        "autocast compute in bf16 or fp16 (fp16: CUDA only) over the weights' dtype",
        choices=("no", "bf16", "fp16"),
    )
    load_in_4bit: bool = load_in_4bit_setting(
        "QLoRA: load the base model in 4-bit NF4 (bitsandbytes, CUDA only) with bf16 compute; needs --lora"
    )
    gradient_checkpointing: bool = setting(
        False,
        "recompute activations in the backward pass to save memory (no "
        "key/value cache is kept then, so the cache layout runs packed)",
    )
    chat_template: str = chat_template_setting(training=True)
    trust_remote_code: bool = trust_remote_code_setting()
    layout: str = layout_setting(
        "auto: the layout measured fastest on this device type (CPU: packed; CUDA: paper), "
        "named in summary.json; packed: each prompt and all its answers in one row under a "
        "block mask; flex: the same rows, the mask as a FlexAttention block mask; cache: "
        "each prompt runs once and its answers on copies of its key/value cache; paper: the "
        "prompt repeated for every answer (the paper's layout)"
    )
    save_every: int = setting(0, "write a resumable checkpoint every N optimizer steps (0: at each epoch's end only)")
    resume: bool = setting(False, "continue from the newest checkpoint in OUT/checkpoints")
    overwrite: bool = setting(
        False,
        "replace the outputs of an earlier run in OUT (without it, or --resume, an OUT holding a run is an error)",
    )
    device: str = device_setting()
    threads: int = threads_setting()
    seed: int = setting(0, "seed for initialisation, shuffling, templates, candidates and negatives")
    progress: bool = progress_setting()
    report_to: str = report_to_setting("also send logs to tensorboard or wandb (our JSONL logs are always written)")

    def check(self) -> None:
        for name in ("train", "out"):
            require(bool(getattr(self, name)), name, "required")
        for name in ("epochs", "batch_size", "grad_accum"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.lr is None or self.lr > 0, "lr", "must be positive")  # None: the default, set in resolve
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.eval_samples >= 0 and self.eval_every >= 0, "eval_every", "must not be negative")
        require(self.save_every >= 0, "save_every", "must not be negative")
        require(all(0 <= w <= 1 for w in self.history_readouts), "history_readouts", "each must be in [0, 1]")
        require(
            len(set(self.history_readouts)) <= 1 or bool(self.valid),
            "history_readouts",
            "choosing among several weights needs validation data: add --valid or give one weight",
        )
        require(not self.load_in_4bit or self.lora, "load_in_4bit", "4-bit weights cannot be trained: add --lora")
        check_threads(self.threads)
        require(
            not (self.resume and self.overwrite),
            "overwrite",
            "--resume continues a run, --overwrite replaces it: give one of them",
        )

    def resolve(self) -> None:
        """After the stage's own resolve has set the learning rate: the machine, the inputs and OUT, checked
        before anything is written or loaded."""
        require(self.lr is not None and self.lr > 0, "lr", "must be positive")
        self.history_readouts = sorted(set(self.history_readouts))  # ties go to the smaller λ
        require_cuda_for_4bit(self.load_in_4bit)
        require(
            self.mixed_precision != "fp16" or (torch.cuda.is_available() and self.device != "cpu"),
            "mixed_precision",
            "fp16 needs a CUDA GPU; use bf16 on a CPU",
        )
        require_backend(self.report_to)
        require_device(self.device)
        require_input(self.train, "train")
        require_input(self.valid, "valid")
        require_apart(self.out, {name: getattr(self, name) for name in ("train", "valid")})
        claim_out_dir(self.out, TRAINING_FILES, self.overwrite, self.resume)


# The history readout's weights tried at validation, by default, where the model learns the history.
READOUT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def default_readouts(cfg: TrainConfig, learns_history: bool) -> None:
    """Fill `cfg.history_readouts` when it was not set: READOUT_GRID where the model learns the history and
    there is validation data to choose on, else the prompt alone. Part of the config's `resolve`, so before
    its config is saved."""
    if not cfg.history_readouts:
        cfg.history_readouts = list(READOUT_GRID) if learns_history and cfg.valid else [0.0]


def default_lr(cfg: TrainConfig, stage: str, backbone: str) -> None:
    """Fill `cfg.lr` from DEFAULT_LR when it was not set, and say so."""
    if cfg.lr is None:
        cfg.lr = DEFAULT_LR[(stage, backbone)]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{stage}: learning rate {cfg.lr:g} (the default for {backbone} training; set --lr to change it)")
