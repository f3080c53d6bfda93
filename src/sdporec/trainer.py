"""The training loop shared by SFT and preference training.

A recipe gives the loop a `make_batch(samples, epoch)` and a `step(batch) -> (loss, stats)`; the loop
does the rest: per-epoch candidate re-draws, seeded shuffling, gradient accumulation, AdamW with warmup
then cosine decay, clipping, JSONL logs, validation HR@1 during training, and keeping the best checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .candidates import redraw, sample_rng
from .config import ConfigError, opt, require, save_config
from .evaluate import evaluate_ranking, lm_scorer
from .prompts import DOMAINS
from .samples import Sample, read_samples


@dataclass
class TrainConfig:
    train: str = opt("", "training samples: the paper's JSON array or JSON Lines")
    valid: str = opt("", "validation samples, for HR@1 during training and the best checkpoint")
    out: str = opt("", "output directory (created)")
    domain: str = opt("music", "prompt templates to use", choices=DOMAINS)
    epochs: int = opt(3, "passes over the training samples")
    batch_size: int = opt(16, "samples per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimizer step (effective batch = batch_size x grad_accum)")
    lr: float = opt(1e-3, "peak learning rate")
    warmup_ratio: float = opt(0.05, "share of optimizer steps spent warming up, then cosine decay")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    eval_every: int = opt(0, "validate every N optimizer steps (0: at the end of each epoch only)")
    eval_samples: int = opt(500, "validation samples used during training (0: all)")
    log_every: int = opt(10, "write a log line every N optimizer steps")
    keep_candidates: bool = opt(False, "keep the file's candidate lists instead of re-drawing them every epoch")
    lora: bool = opt(False, "train a LoRA adapter instead of all weights")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    dtype: str = opt("float32", "weights' dtype", choices=("float32", "bfloat16", "float16"))
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    threads: int = opt(0, "CPU threads for PyTorch (0: PyTorch's default)")
    seed: int = opt(0, "seed for initialisation, shuffling, templates, candidates and negatives")
    progress: bool = opt(True, "show progress bars")
    report_to: str = opt("none", "also send logs to tensorboard or wandb (our JSONL logs are always written)",
                         choices=("none", "tensorboard", "wandb"))

    def validate(self) -> None:
        for name in ("train", "out"):
            require(bool(getattr(self, name)), name, "required")
        for name in ("epochs", "batch_size", "grad_accum"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.eval_samples >= 0 and self.eval_every >= 0, "eval_every", "must not be negative")


def start_run(cfg: TrainConfig) -> tuple[Path, list[Sample], list[Sample]]:
    """Create the run directory, save the resolved config, set threads, and read the splits."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train = read_samples(cfg.train, "train")
    valid = read_samples(cfg.valid, "valid") if cfg.valid else []
    return out, train, valid


def train_loop(cfg: TrainConfig, model, codec, train: Sequence[Sample], valid: Sequence[Sample],
               items: Sequence[str], make_batch: Callable, step: Callable, save: Callable[[], None],
               out_dir: Path, on_epoch_start: Callable | None = None) -> dict:
    """Runs the epochs; calls `on_epoch_start(epoch, samples)` once the epoch's candidate lists are drawn,
    and `save()` whenever validation HR@1 improves (or every epoch without validation data). Returns a
    summary with the best validation HR@1 and the wall time."""
    device = next(model.parameters()).device
    micro_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = math.ceil(micro_per_epoch / cfg.grad_accum) * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    schedule = lambda s: (s + 1) / max(1, warmup) if s < warmup else \
        0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    val_subset = list(valid[:cfg.eval_samples] if cfg.eval_samples else valid)
    scorer = lm_scorer(model, codec, cfg.domain, batch_size=cfg.batch_size, progress=False)
    log = RunLog(cfg, out_dir)
    best, opt_step, started = -1.0, 0, time.time()
    window: list[dict] = []

    def validate(epoch: float) -> None:
        nonlocal best
        if not val_subset:
            save()
            return
        metrics, _ = evaluate_ranking(scorer, val_subset)
        improved = metrics["hr@1"] > best
        if improved:
            best = metrics["hr@1"]
            save()
        log.write("eval", {"step": opt_step, "epoch": round(epoch, 3), **metrics, "best": improved,
                            "elapsed_s": round(time.time() - started, 1)})
        tqdm.write(f"step {opt_step} epoch {epoch:.2f}: valid hr@1 {metrics['hr@1']:.4f}"
                   f"{' (best)' if improved else ''}")

    model.train()
    for epoch in range(cfg.epochs):
        samples = list(train) if cfg.keep_candidates else redraw(train, items, cfg.seed, epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch, samples)
        order = list(range(len(samples)))
        sample_rng(cfg.seed, "order", epoch).shuffle(order)
        bar = tqdm(range(micro_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress)
        for micro in bar:
            chunk = [samples[i] for i in order[micro * cfg.batch_size:(micro + 1) * cfg.batch_size]]
            loss, stats = step(make_batch(chunk, epoch).to(device))
            (loss / cfg.grad_accum).backward()
            window.append({"loss": loss.item(), **stats})
            last_micro = micro == micro_per_epoch - 1
            if (micro + 1) % cfg.grad_accum and not last_micro:
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            opt_step += 1
            if opt_step % cfg.log_every == 0 or last_micro:
                row = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                log.write("train", {"step": opt_step, "epoch": round(epoch + (micro + 1) / micro_per_epoch, 3),
                                   "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, **row})
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                window = []
            if cfg.eval_every and opt_step % cfg.eval_every == 0 and not last_micro:
                validate(epoch + (micro + 1) / micro_per_epoch)
        validate(epoch + 1.0)
    log.close()
    return {"best_valid_hr@1": best if val_subset else None, "optimizer_steps": opt_step,
            "train_seconds": round(time.time() - started, 1)}


class RunLog:
    """`train_log.jsonl` and `eval_log.jsonl` in the run directory, always; tensorboard or wandb as well
    when asked (`report` reads only the JSONL files, so it needs no backend)."""

    def __init__(self, cfg: TrainConfig, out_dir: Path):
        self.paths = {"train": out_dir / "train_log.jsonl", "eval": out_dir / "eval_log.jsonl"}
        for p in self.paths.values():
            p.write_text("")
        self._tb = self._wandb = None
        if cfg.report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("setting 'report_to': tensorboard is not installed (pip install tensorboard)") from None
            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        elif cfg.report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise ConfigError("setting 'report_to': wandb is not installed (pip install wandb)") from None
            self._wandb = wandb.init(project="sdporec", name=out_dir.name, dir=str(out_dir), config=asdict(cfg))

    def write(self, kind: str, row: dict) -> None:
        with open(self.paths[kind], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {f"{kind}/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, row["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
