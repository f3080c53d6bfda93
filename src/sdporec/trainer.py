"""The training loop shared by SFT and preference training.

A recipe gives the loop a `make_batch(samples, epoch)` and a `step(model, batch) -> (loss, stats)`; the
loop does the rest: per-epoch candidate re-draws, seeded shuffling, gradient accumulation, AdamW with
warmup then cosine decay, clipping, mixed precision and several processes (through accelerate), JSONL
logs, validation HR@1 during training, keeping the best checkpoint, and resumable checkpoints.

Resumable checkpoints live in `OUT/checkpoints/step-NNNNNNNN/`: accelerate's state (trainable weights,
optimizer, scheduler, every process's random states) and `trainer_state.json` (epoch, micro-batch,
optimizer step, best validation HR@1, the config). Each is written under a temporary name and renamed
when complete; the newest 2 are kept. `--resume` continues from the newest.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .candidates import redraw, require_negatives, require_redrawable, sample_rng, validation_subset
from .config import (ConfigError, claim_out_dir, clear_outputs, opt, require, require_cuda_for_4bit, require_device,
                     require_input, save_config)
from .distributed import global_micro_batch, make_accelerator, micro_batch, set_seed
from .evaluate import evaluate_ranking, evaluate_sharded, lm_scorer
from .metrics import NonFiniteError
from .logprobs import LAYOUTS
from .codec import CHAT_CHOICES, require_known_titles
from .prompts import DOMAINS
from .runlog import RunLog, peak_memory_gib
from .samples import DataError, Sample, atomic_write_text, read_samples


@dataclass
class TrainConfig:
    train: str = opt("", "training samples: the paper's JSON array or JSON Lines")
    valid: str = opt("", "validation samples, for HR@1 during training and the best checkpoint")
    out: str = opt("", "output directory (created)")
    domain: str | None = opt(None, "prompt templates to use (default: those the starting checkpoint was trained "
                             "with, else music)", choices=DOMAINS)
    epochs: int = opt(3, "passes over the training samples")
    batch_size: int = opt(16, "samples per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimizer step (effective batch = batch_size x grad_accum)")
    lr: float | None = opt(None, "peak learning rate (unset: the default for the stage and backbone, "
                           "DEFAULT_LR in trainer.py; the value used is printed and saved in config.yaml)")
    warmup_ratio: float = opt(0.05, "share of optimizer steps spent warming up, then cosine decay")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    eval_every: int = opt(0, "validate every N optimizer steps (0: at the end of each epoch only)")
    eval_samples: int = opt(500, "validation samples used during training, a seeded random subset across users, "
                            "the same for every stage and seed on the same file (0: all)")
    log_every: int = opt(10, "write a log line every N optimizer steps")
    keep_candidates: bool = opt(False, "keep the file's candidate lists instead of re-drawing them every epoch")
    lora: bool = opt(False, "train a LoRA adapter instead of all weights")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    lora_targets: list[str] = opt([], "LoRA target module names (default: every linear layer of the attention "
                                  "and MLP blocks, found per model)")
    dtype: str = opt("float32", "weights' dtype", choices=("float32", "bfloat16", "float16"))
    mixed_precision: str = opt("no", "autocast compute in bf16 or fp16 (fp16: CUDA only) over the weights' dtype",
                               choices=("no", "bf16", "fp16"))
    load_in_4bit: bool = opt(False, "QLoRA: load the base model in 4-bit NF4 (bitsandbytes, CUDA only) with bf16 "
                             "compute; needs --lora")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass to save memory (no "
                                       "key/value cache is kept then, so the cache layout runs packed)")
    chat_template: str = opt("auto", "text prompts in the tokenizer's chat template: auto (what a checkpoint "
                             "was trained with; else on where the tokenizer has a template), on or off",
                             choices=CHAT_CHOICES)
    layout: str = opt("packed", "packed: each prompt and all its answers in one row under a block mask; cache: "
                      "each prompt runs once and its answers on copies of its key/value cache; paper: the "
                      "prompt repeated for every answer (the paper's layout, for comparisons)", choices=LAYOUTS)
    save_every: int = opt(0, "write a resumable checkpoint every N optimizer steps (0: at each epoch's end only)")
    resume: bool = opt(False, "continue from the newest checkpoint in OUT/checkpoints")
    overwrite: bool = opt(False, "replace the outputs of an earlier run in OUT (without it, or --resume, an OUT "
                          "holding a run is an error)")
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
        require(self.lr is not None and self.lr > 0, "lr", "must be positive")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.eval_samples >= 0 and self.eval_every >= 0, "eval_every", "must not be negative")
        require(self.save_every >= 0, "save_every", "must not be negative")
        require(not self.load_in_4bit or self.lora, "load_in_4bit", "4-bit weights cannot be trained: add --lora")
        # Checked before anything is written or loaded.
        require_cuda_for_4bit(self.load_in_4bit)
        require(self.mixed_precision != "fp16" or (torch.cuda.is_available() and self.device != "cpu"),
                "mixed_precision", "fp16 needs a CUDA GPU; use bf16 on a CPU")
        require(self.threads >= 0, "threads", "must not be negative (0: PyTorch's default)")
        for backend, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
            require(self.report_to != backend or importlib.util.find_spec(module) is not None, "report_to",
                    f"{backend} is not installed (pip install {backend})")
        require(not (self.resume and self.overwrite), "overwrite", "--resume continues a run, --overwrite "
                "replaces it: give one of them")
        require_device(self.device)
        require_input(self.train, "train")
        require_input(self.valid, "valid")
        claim_out_dir(self.out, RUN_OUTPUTS, self.overwrite, self.resume)


# What a training run writes in OUT; an earlier run's are replaced only with --overwrite (the reference
# cache is kept: its entries are keyed by everything that changes them).
RUN_OUTPUTS = ("config.yaml", "model", "checkpoints", "summary.json", "train_log.jsonl", "eval_log.jsonl",
               "base_model", "tensorboard", "model.tmp", "model.old")


# Peak learning rates when `--lr` is not given, by stage and by what is trained: the built-in backbone
# (all weights), a LoRA adapter on a pretrained model, or all weights of a pretrained model. The built-in
# values were chosen on LastFM and MovieLens, LoRA SFT's on SmolLM2-135M (README, "Little data"); LoRA
# preference training and full fine-tuning of a pretrained model take the field's usual orders of magnitude
# (not measured here).
DEFAULT_LR = {
    ("sft", "builtin"): 1e-3, ("sft", "lora"): 1e-3, ("sft", "full"): 2e-5,
    ("preference", "builtin"): 5e-4, ("preference", "lora"): 1e-4, ("preference", "full"): 5e-6,
}


def default_lr(cfg: "TrainConfig", stage: str, backbone: str) -> None:
    """Fill `cfg.lr` from DEFAULT_LR when it was not set, and say so."""
    if cfg.lr is None:
        cfg.lr = DEFAULT_LR[(stage, backbone)]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{stage}: learning rate {cfg.lr:g} (the default for {backbone} training; set --lr to change it)")


# Settings that may change between an interrupted run and its resumption.
_RESUMABLE = {"resume", "overwrite", "progress", "threads", "report_to", "device"}


@dataclass
class Run:
    out: Path
    train: list[Sample]
    valid: list[Sample]
    acc: object  # accelerate.Accelerator

    @property
    def main(self) -> bool:
        return self.acc.is_main_process


def start_run(cfg: TrainConfig, codec=None, model: str = "", negatives: int = 0) -> Run:
    """Read and check the splits, then create the accelerator and the run directory (an earlier run's
    outputs removed, with --overwrite) and save the resolved config: bad data writes nothing. Checked:
    lists can be re-drawn, `codec` (of the checkpoint `model` training starts from) knows every title, and
    every sample has `negatives` non-target candidates."""
    out = Path(cfg.out)
    train = read_samples(cfg.train, "train")
    valid = read_samples(cfg.valid, "valid") if cfg.valid else []
    if not cfg.keep_candidates:
        require_redrawable(cfg.train, train)
    if codec is not None:
        require_known_titles(codec, model, train, cfg.train)
        require_known_titles(codec, model, valid, cfg.valid)
    require_negatives(cfg.train, train, negatives)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    acc = make_accelerator(cfg.device, cfg.mixed_precision, cfg.grad_accum)
    set_seed(cfg.seed)   # model creation and LoRA initialisation draw from these generators
    if acc.is_main_process:
        if cfg.overwrite:
            clear_outputs(cfg.out, RUN_OUTPUTS)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    acc.wait_for_everyone()
    return Run(out, train, valid, acc)


def require_finite_training(what: str, value: float, opt_step: int, epoch: int, micro: int) -> None:
    """A loss or gradient norm of NaN or inf ends the run before the optimizer writes it into the weights;
    the model and checkpoints saved before stay as they were."""
    if not math.isfinite(value):
        raise NonFiniteError(f"the training {what} is {value} at optimizer step {opt_step + 1} (epoch {epoch + 1}, "
                             f"micro-batch {micro + 1}); the run stops, the model and checkpoints saved before "
                             "are kept. Try a lower --lr or --max-grad-norm, or float32 / bf16 instead of float16")


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "trainer_state.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def _keep_trainable(models, weights, _dir) -> None:
    """accelerate save hook: frozen weights (a LoRA's base, a QLoRA's 4-bit model) are not saved again."""
    for model, state in zip(models, weights):
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        for name in [k for k in state if k not in trainable]:
            del state[name]


def train_loop(cfg: TrainConfig, run: Run, model, codec, items: Sequence[str], make_batch: Callable,
               step: Callable, save: Callable, units: Callable[[Sample], int],
               on_epoch_start: Callable | None = None) -> dict:
    """Runs the epochs; calls `on_epoch_start(epoch, samples)` once the epoch's candidate lists are drawn,
    `step(model, batch) -> (losses (B,), stats {name: (B,)})` per micro-batch, and `save(model, state_dict)`
    on the main process whenever validation HR@1 improves (or every epoch without validation data).

    The loss of an optimizer step is the sum of its samples' losses over the sum of their `units(sample)`
    (answer tokens for SFT, 1 per sample for preference training; counted once per sample, so they may
    depend on its target and history but not on its candidate list), taken over the whole global batch: all
    its micro-batches on all processes. So batch size, accumulation steps and process count may be traded
    for one another without changing the numbers, even where answers differ in length or an epoch's last
    step is short. Returns a summary with the best validation HR@1 and the wall time, also written as
    `summary.json` in the run directory."""
    acc, out_dir, train = run.acc, run.out, run.train
    rank, world = acc.process_index, acc.num_processes
    micro_per_epoch = math.ceil(len(train) / (cfg.batch_size * world))
    total_steps = math.ceil(micro_per_epoch / cfg.grad_accum) * cfg.epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    schedule = lambda s: (s + 1) / max(1, warmup) if s < warmup else \
        0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if acc.state.deepspeed_plugin is not None:
        # DeepSpeed wants its micro-batch size up front; we feed no DataLoader it could read it from.
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"] = cfg.batch_size, cfg.grad_accum
        ds["gradient_clipping"] = cfg.max_grad_norm   # DeepSpeed clips itself; accelerate's clipping is a no-op
    # The scheduler is registered, not prepared: a prepared one steps once per process per call.
    model, optimizer = acc.prepare(model, optimizer)
    # After prepare: FSDP replaces the parameters with sharded ones; these are what clipping must see.
    params = [p for p in model.parameters() if p.requires_grad]
    acc.register_for_checkpointing(scheduler)
    acc.register_save_state_pre_hook(_keep_trainable)
    val_subset = validation_subset(run.valid, cfg.eval_samples)
    # A sample's units depend on its target and history only, never on the epoch's candidate list.
    sample_units = [units(s) for s in train]
    scorer = lm_scorer(model, codec, cfg.domain, batch_size=cfg.batch_size, progress=False,
                       layout=cfg.layout)
    ckpt_root = out_dir / "checkpoints"
    state = {"epoch": 0, "micro": 0, "opt_step": 0, "best": -1.0, "elapsed": 0.0, "window": []}
    if cfg.resume:
        latest = latest_checkpoint(ckpt_root)
        if latest is None:
            raise ConfigError(f"setting 'resume': no complete checkpoint in {ckpt_root}")
        try:
            state = json.loads((latest / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(latest / "trainer_state.json", None, None, f"unreadable ({e}); remove {latest} to "
                            "resume from the checkpoint before it") from None
        changed = sorted(k for k, v in asdict(cfg).items()
                         if k not in _RESUMABLE and state["config"].get(k) != v)
        if changed:
            raise ConfigError(f"setting 'resume': {latest} was written with other values of {', '.join(changed)}")
        acc.load_state(str(latest), strict=False)
        print(f"resuming from {latest} (epoch {state['epoch']}, micro-batch {state['micro']}, "
              f"step {state['opt_step']})")
    log = RunLog(cfg, out_dir, enabled=run.main, keep_until=state["opt_step"] if cfg.resume else None)
    opt_step, best, window = state["opt_step"], state["best"], state["window"]
    started = time.time() - state["elapsed"]
    tokens, seen, loop_started = 0, 0, time.time()
    if not cfg.resume:   # dropout: its own stream per process; a resumed run restores the saved states
        set_seed(cfg.seed + rank)
    unwrapped = acc.unwrap_model(model)

    def save_best() -> None:
        from accelerate.utils import DistributedType

        full = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        state_dict = acc.get_state_dict(model) if full else None   # a collective: every process calls it
        if run.main:
            save(unwrapped, state_dict)
        acc.wait_for_everyone()

    def save_state(epoch: int, micro: int) -> None:
        """A resumable checkpoint at an optimizer-step boundary; `micro` is the next micro-batch to run."""
        name = ckpt_root / f"step-{opt_step:08d}"
        tmp = ckpt_root / f".tmp-step-{opt_step:08d}"
        if run.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if run.main:
            trainer_state = {"epoch": epoch, "micro": micro, "opt_step": opt_step, "best": best,
                             "elapsed": time.time() - started, "window": window, "config": asdict(cfg)}
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
            # Older checkpoints go before the new one is renamed into place, so that a kill at any moment
            # leaves at most 2 and at least 1 complete one (pruning after the rename left 3 for a moment).
            for old in sorted(p for p in ckpt_root.glob("step-*") if p != name)[:-1]:
                shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(name, ignore_errors=True)
            os.replace(tmp, name)
        acc.wait_for_everyone()

    def validate(epoch: float) -> None:
        nonlocal best
        if not val_subset:
            save_best()
            return
        metrics, _ = evaluate_sharded(lambda part: evaluate_ranking(scorer, part), val_subset, rank, world)
        improved = metrics["hr@1"] > best
        if improved:
            best = metrics["hr@1"]
            save_best()
        log.write("eval", {"step": opt_step, "epoch": round(epoch, 3), **metrics, "best": improved,
                            "elapsed_s": round(time.time() - started, 1)})
        if run.main:
            tqdm.write(f"step {opt_step} epoch {epoch:.2f}: valid hr@1 {metrics['hr@1']:.4f}"
                       f"{' (best)' if improved else ''}")

    model.train()
    for epoch in range(state["epoch"], cfg.epochs):
        samples = list(train) if cfg.keep_candidates else redraw(train, items, cfg.seed, epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch, samples)
        order = list(range(len(samples)))
        sample_rng(cfg.seed, "order", epoch).shuffle(order)
        first = state["micro"] if epoch == state["epoch"] else 0
        bar = tqdm(range(first, micro_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and run.main))
        acc.step = 0   # accelerate's count of micro-batches into the window; a window never spans epochs
        for micro in bar:
            if micro % cfg.grad_accum == 0:   # a new optimizer step: its global batch's units, from every process
                window_micros = range(micro, min(micro + cfg.grad_accum, micro_per_epoch))
                step_units = sum(sample_units[i] for m in window_micros
                                 for i in global_micro_batch(order, m, cfg.batch_size, world))
                step_sums = torch.zeros(0)
            mine = micro_batch(order, micro, cfg.batch_size, rank, world)
            weights = torch.tensor([1.0] * len(mine) or [0.0], device=acc.device)   # padding weighs 0
            batch = make_batch([samples[i] for i in mine or order[:1]], epoch).to(acc.device)
            tokens += int(batch.prompt_mask.sum() + batch.answer_mask.sum())   # tokens the model ran
            seen += len(mine)
            last_micro = micro == micro_per_epoch - 1
            if last_micro:
                acc.step = cfg.grad_accum - 1   # the epoch's last micro-batch ends its window, full or not
            with acc.accumulate(model):
                losses, stats = step(model, batch)
                # accelerate divides by grad_accum and the processes' gradients are averaged: undone here, so
                # the gradient is that of (sum of the global batch's losses) / (its units).
                acc.backward((losses * weights).sum() * (world * cfg.grad_accum / step_units))
                sums = torch.stack([(v.detach().float() * weights).sum() for v in (losses, *stats.values())])
                step_sums = sums if step_sums.numel() == 0 else step_sums + sums
                if not acc.sync_gradients:
                    continue
                # The step's loss over its units; its statistics as means over its samples.
                totals = acc.reduce(step_sums, "sum").tolist()
                require_finite_training("loss", totals[0], opt_step, epoch, micro)   # same on every process
                n_samples = sum(len(global_micro_batch(order, m, cfg.batch_size, world)) for m in window_micros)
                window.append({"loss": totals[0] / step_units,
                               **{k: v / n_samples for k, v in zip(stats, totals[1:])}})
                grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)   # None under DeepSpeed
                grad_norm = float("nan") if grad_norm is None else float(grad_norm)
                if cfg.mixed_precision != "fp16" and acc.state.deepspeed_plugin is None:   # fp16's scaler skips these
                    require_finite_training("gradient norm", grad_norm, opt_step, epoch, micro)
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
            if cfg.save_every and opt_step % cfg.save_every == 0 and not last_micro:
                save_state(epoch, micro + 1)
        validate(epoch + 1.0)
        save_state(epoch + 1, 0)
    log.close()
    # Throughput of all processes over this invocation (validation and checkpoints included).
    span = max(time.time() - loop_started, 1e-9)
    seen, tokens = acc.reduce(torch.tensor([seen, tokens], device=acc.device), "sum").tolist()
    summary = {"best_valid_hr@1": best if val_subset else None, "optimizer_steps": opt_step,
            "train_seconds": round(time.time() - started, 1), "processes": world,
            "distributed": str(acc.distributed_type.value), "grad_accum": cfg.grad_accum,
            "samples_per_second": round(seen / span, 2), "tokens_per_second": round(tokens / span, 1),
            "peak_memory_gib": round(peak_memory_gib(acc.device), 3)}
    if run.main:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
