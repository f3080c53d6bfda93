"""The training loop shared by SFT and preference training, read top to bottom in `Trainer`:
set-up (`__init__`), `fit` over epochs, `train_epoch` over micro-batches, `optimizer_step`, `validate`,
`save_checkpoint`, and `finish` (the summary).

A stage gives the trainer a `Recipe` (`SFTRecipe` in sft.py, `PreferenceRecipe` in preference.py): how to
batch samples, the per-sample losses of a batch, each sample's loss units, what to do when an epoch's
candidate lists are drawn, and how to save the model. The trainer does the rest: per-epoch candidate
re-draws, seeded shuffling, gradient accumulation, AdamW with warmup then cosine decay, clipping, mixed
precision and several processes (through accelerate), JSONL logs, validation HR@1 during training, the
best checkpoint, and resumable checkpoints.

Resumable checkpoints live in `OUT/checkpoints/step-NNNNNNNN/`: the training state in formats that cannot
run code (trainable weights, optimizer, scheduler, every process's random states: `training/state.py`) and
`trainer_state.json` (`TrainState` and the config). Each is written under a temporary name and renamed when
complete; the newest 2 are kept. `--resume` continues from the newest. Under FSDP and DeepSpeed, whose
states are sharded, none is written and `--resume` is refused.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import torch
from tqdm.auto import tqdm

from sdporec.data.batching import AnswerBatch
from sdporec.data.candidates import redraw, sample_rng, validation_subset
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, warn
from sdporec.evaluation.evaluate import evaluate_sharded
from sdporec.evaluation.metrics import NonFiniteError
from sdporec.evaluation.scoring import LMScorer, readout_metrics, readout_rows
from sdporec.models.scoring import resolve_layout
from sdporec.runs import CHECKPOINTS, SUMMARY, training_summary, write_json
from sdporec.training.distributed import (
    deepspeed_settings,
    global_micro_batch,
    micro_batch,
    set_seed,
)
from sdporec.training.losses import window_share
from sdporec.training.run import TrainingRun
from sdporec.training.runlog import RunLog, peak_memory_gib
from sdporec.training.state import CheckpointFolder, TrainState, load_training_state, save_training_state
from sdporec.training.train_config import RESUMABLE, SINCE, TrainOptions


class Recipe(Protocol):
    """What a training stage gives the `Trainer`."""

    def units(self, sample: Sample) -> int:
        """The sample's share of the loss's denominator: answer tokens for SFT, 1 for preference training.
        Counted once per sample, so it may depend on its target and history but not its candidate list."""

    def start_epoch(self, epoch: int, samples: Sequence[Sample]) -> None:
        """Called once the epoch's candidate lists are drawn (preference training scores them here)."""

    def make_batch(self, samples: Sequence[Sample], epoch: int) -> AnswerBatch:
        """The samples as a batch (format: data/batching.py)."""

    def losses(self, model, batch: AnswerBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample losses (B,) and per-sample statistics {name: (B,)} to log."""

    def save(self, model, state_dict: dict | None, readout: float) -> None:
        """Write the model as the run's checkpoint (`state_dict`: gathered under FSDP / DeepSpeed), recording
        `readout`, the history readout's weight chosen on validation."""


# Debug setting (environment): the process SIGKILLs itself after this optimizer step, as a crash would.
KILL_AT_STEP = "SDPOREC_DEBUG_KILL_AT_STEP"


@dataclass
class StepWindow:
    """The micro-batches of the optimizer step being accumulated, and what they add up to."""

    micros: range
    units: int  # loss units of the whole global batch (every process's samples)
    samples: int  # samples of the whole global batch
    sums: torch.Tensor | None = None  # this process's sums of the loss and of each statistic


def require_finite_training(what: str, value: float, state: TrainState, micro: int) -> None:
    """A loss or gradient norm of NaN or inf ends the run before the optimizer writes it into the weights;
    the model and checkpoints saved before stay as they were."""
    if not math.isfinite(value):
        raise NonFiniteError(
            f"the training {what} is {value} at optimizer step {state.opt_step + 1} (epoch "
            f"{state.epoch + 1}, micro-batch {micro + 1}); the run stops, the model and checkpoints "
            "saved before are kept. Try a lower --lr or --max-grad-norm, or float32 / bf16 "
            "instead of float16"
        )


def sharded(acc) -> bool:
    """Whether the model's weights and optimizer state are split over processes (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def warmup_cosine(warmup: int, total: int):
    """The learning-rate multiplier at optimizer step s: linear warmup, then cosine decay to 0."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    return factor


class Trainer:
    """Runs a recipe's epochs. The loss of an optimizer step is the sum of its samples' losses over the sum
    of their units, taken over the whole global batch (all its micro-batches on all processes), so batch
    size, accumulation steps and process count may be traded for one another without changing the
    numbers, even where answers differ in length or an epoch's last step is short."""

    def __init__(self, cfg: TrainOptions, run: TrainingRun, model, codec, items: Sequence[str], recipe: Recipe):
        self.cfg, self.run, self.recipe, self.items = cfg, run, recipe, items
        self.kill_at = int(os.environ.get(KILL_AT_STEP) or 0)  # 0: never
        self.acc = acc = run.acc
        self.rank, self.world = acc.process_index, acc.num_processes
        self.micro_per_epoch = math.ceil(len(run.train) / (cfg.batch_size * self.world))
        total_steps = math.ceil(self.micro_per_epoch / cfg.grad_accum) * cfg.epochs
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(int(cfg.warmup_ratio * total_steps), total_steps)
        )
        if acc.state.deepspeed_plugin is not None:
            acc.state.deepspeed_plugin.deepspeed_config.update(
                deepspeed_settings(cfg.batch_size, cfg.grad_accum, cfg.max_grad_norm)
            )
        # The scheduler is registered, not prepared: a prepared one steps once per process per call.
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # After prepare: FSDP replaces the parameters with sharded ones; these are what clipping must see.
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.resumable = not sharded(acc)
        if not self.resumable:
            if cfg.resume:
                raise ConfigError(
                    f"setting 'resume': this run is sharded ({acc.distributed_type.value}); sdporec "
                    "writes no resumable checkpoints for sharded runs, so there is nothing to resume"
                )
            if run.main:
                warn(
                    f"{acc.distributed_type.value}: no resumable checkpoints are written for a sharded run "
                    "(--save-every and --resume apply to one process or DDP); the best model is still saved"
                )
        self.val_subset = validation_subset(run.valid, cfg.eval_samples)
        self.sample_units = [recipe.units(s) for s in run.train]
        self.scorer = LMScorer(
            self.model,
            codec,
            cfg.domain,
            batch_size=cfg.batch_size,
            task=cfg.task,
            progress=False,
            layout=resolve_layout(cfg.layout, acc.device, codec.short_answers),
        )
        self.checkpoints = CheckpointFolder(run.out / CHECKPOINTS)
        self.state = self.resume() if cfg.resume else TrainState(readout=cfg.history_readouts[0])
        self.log = RunLog(cfg, run.out, enabled=run.main, keep_until=self.state.opt_step if cfg.resume else None)
        self.started = time.time() - self.state.elapsed
        self.tokens = self.seen = 0

    def resume(self) -> TrainState:
        """The state of the newest complete checkpoint, whose training state is loaded too."""
        latest = self.checkpoints.latest()
        if latest is None:
            raise ConfigError(f"setting 'resume': no complete checkpoint in {self.checkpoints.root}")
        state, config = self.checkpoints.read_trainer_state(latest)
        recorded = {**SINCE, **config}  # a setting newer than the run: what the run did without it
        changed = sorted(k for k, v in asdict(self.cfg).items() if k not in RESUMABLE and recorded.get(k) != v)
        if changed:
            raise ConfigError(f"setting 'resume': {latest} was written with other values of {', '.join(changed)}")
        if config.get("processes", self.world) != self.world:  # epochs, micro-batches and schedule depend on it
            raise ConfigError(
                f"setting 'resume': {latest} was written by {config['processes']} process(es); "
                f"resume it with as many (this run has {self.world})"
            )
        model = self.acc.unwrap_model(self.model)
        load_training_state(latest, model, self.optimizer, self.scheduler, self.acc.scaler, self.rank)
        print(f"resuming from {latest} (epoch {state.epoch}, micro-batch {state.micro}, step {state.opt_step})")
        return state

    def fit(self) -> dict:
        """Every remaining epoch, each followed by validation and a resumable checkpoint; the summary."""
        if not self.cfg.resume:  # dropout: its own stream per process; a resumed run restores the saved states
            set_seed(self.cfg.seed + self.rank)
        fit_started = time.time()
        self.model.train()
        for epoch in range(self.state.epoch, self.cfg.epochs):
            self.train_epoch(epoch)
            self.validate(epoch + 1.0)
            self.save_checkpoint(epoch + 1, 0)
        self.log.close()
        return self.finish(fit_started)

    def train_epoch(self, epoch: int) -> None:
        """The epoch's candidate lists and order, then its micro-batches; a window of `grad_accum`
        micro-batches makes one optimizer step (the epoch's last window may be shorter)."""
        cfg, state = self.cfg, self.state
        samples = list(self.run.train) if cfg.keep_candidates else redraw(self.run.train, self.items, cfg.seed, epoch)
        self.recipe.start_epoch(epoch, samples)
        order = list(range(len(samples)))
        sample_rng(cfg.seed, "order", epoch).shuffle(order)
        first = state.micro if epoch == state.epoch else 0
        state.epoch = epoch
        bar = tqdm(
            range(first, self.micro_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and self.run.main),
        )
        self.acc.step = 0  # accelerate's count of micro-batches into the window; a window never spans epochs
        for micro in bar:
            if micro % cfg.grad_accum == 0:
                window = self.open_window(order, micro)
            if not self.micro_step(samples, order, micro, window):
                continue
            self.after_step(epoch + (micro + 1) / self.micro_per_epoch, micro, bar)

    def open_window(self, order: list[int], micro: int) -> StepWindow:
        """A new optimizer step: its global batch's units and samples, counted from every process's share."""
        cfg = self.cfg
        micros = range(micro, min(micro + cfg.grad_accum, self.micro_per_epoch))
        shares = [global_micro_batch(order, m, cfg.batch_size, self.world) for m in micros]
        return StepWindow(
            micros, sum(self.sample_units[i] for share in shares for i in share), sum(len(share) for share in shares)
        )

    def micro_step(self, samples: list[Sample], order: list[int], micro: int, window: StepWindow) -> bool:
        """Forward and backward of this process's share of one micro-batch; True when it ended a window
        and the optimizer stepped. A process with no share runs one padding sample of weight 0."""
        cfg, acc = self.cfg, self.acc
        mine = micro_batch(order, micro, cfg.batch_size, self.rank, self.world)
        weights = torch.tensor([1.0] * len(mine) or [0.0], device=acc.device)
        batch = self.recipe.make_batch([samples[i] for i in mine or order[:1]], self.state.epoch).to(acc.device)
        self.tokens += int(batch.prompt_mask.sum() + batch.answer_mask.sum())  # tokens the model ran
        self.seen += len(mine)
        if micro == self.micro_per_epoch - 1:
            acc.step = cfg.grad_accum - 1  # the epoch's last micro-batch ends its window, full or not
        with acc.accumulate(self.model):
            losses, stats = self.recipe.losses(self.model, batch)
            acc.backward(window_share(losses, weights, self.world, cfg.grad_accum, window.units))
            sums = torch.stack([(v.detach().float() * weights).sum() for v in (losses, *stats.values())])
            window.sums = sums if window.sums is None else window.sums + sums
            if not acc.sync_gradients:
                return False
            self.optimizer_step(window, list(stats), micro)
        return True

    def optimizer_step(self, window: StepWindow, stat_names: list[str], micro: int) -> None:
        """The step's loss (over its units) and statistics (means over its samples) from every process,
        checked to be finite; clipping, the optimizer and the scheduler."""
        totals = self.acc.reduce(window.sums, "sum").tolist()
        require_finite_training("loss", totals[0], self.state, micro)  # the same on every process
        self.state.window.append(
            {"loss": totals[0] / window.units, **{k: v / window.samples for k, v in zip(stat_names, totals[1:])}}
        )
        grad_norm = self.acc.clip_grad_norm_(self.params, self.cfg.max_grad_norm)  # None under DeepSpeed
        self.grad_norm = float("nan") if grad_norm is None else float(grad_norm)
        if self.cfg.mixed_precision != "fp16" and self.acc.state.deepspeed_plugin is None:  # fp16's scaler skips
            require_finite_training("gradient norm", self.grad_norm, self.state, micro)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, epoch: float, micro: int, bar) -> None:
        """Count the step; log, validate and checkpoint when due (the epoch's end does its own)."""
        cfg, state = self.cfg, self.state
        state.opt_step += 1
        last_micro = micro == self.micro_per_epoch - 1
        if state.opt_step % cfg.log_every == 0 or last_micro:
            row = {k: sum(w[k] for w in state.window) / len(state.window) for k in state.window[0]}
            self.log.write(
                "train",
                {
                    "step": state.opt_step,
                    "epoch": round(epoch, 3),
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": self.grad_norm,
                    **row,
                },
            )
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            state.window = []
        if last_micro:
            return
        if cfg.eval_every and state.opt_step % cfg.eval_every == 0:
            self.validate(epoch)
        if cfg.save_every and state.opt_step % cfg.save_every == 0:
            self.save_checkpoint(state.epoch, micro + 1)
        if state.opt_step == self.kill_at:  # tests of resume: a crash at a chosen step
            os.kill(os.getpid(), signal.SIGKILL)

    def validate(self, epoch: float) -> None:
        """HR@1 on the validation subset (sharded over processes), at the best of the history readout's weights
        tried; the model and that weight are saved when it improves (or at every epoch's end without
        validation data)."""
        state, readouts = self.state, self.cfg.history_readouts
        if not self.val_subset:
            self.save_best()
            return
        _, rows = evaluate_sharded(
            lambda part: readout_rows(self.scorer, part, readouts), self.val_subset, self.rank, self.world
        )
        by_readout = readout_metrics(rows, readouts)
        readout = max(by_readout, key=lambda w: by_readout[w]["hr@1"])  # the first of equals: the smaller λ
        metrics = by_readout[readout]
        improved = metrics["hr@1"] > state.best
        if improved:
            state.best, state.readout = metrics["hr@1"], readout
            self.save_best()
        chosen = (
            {"history_readout": readout, "hr@1_by_readout": {f"{w:g}": m["hr@1"] for w, m in by_readout.items()}}
            if len(readouts) > 1
            else {}
        )
        self.log.write(
            "eval",
            {
                "step": state.opt_step,
                "epoch": round(epoch, 3),
                **metrics,
                **chosen,
                "best": improved,
                "elapsed_s": round(time.time() - self.started, 1),
            },
        )
        if self.run.main:
            at = f" (history readout {readout:g})" if len(readouts) > 1 else ""
            tqdm.write(
                f"step {state.opt_step} epoch {epoch:.2f}: valid hr@1 {metrics['hr@1']:.4f}{at}"
                f"{' (best)' if improved else ''}"
            )

    def save_best(self) -> None:
        from accelerate.utils import DistributedType

        full = self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        state_dict = self.acc.get_state_dict(self.model) if full else None  # a collective: every process calls it
        if self.run.main:
            self.recipe.save(self.acc.unwrap_model(self.model), state_dict, self.state.readout)
        self.acc.wait_for_everyone()

    def save_checkpoint(self, epoch: int, micro: int) -> None:
        """A resumable checkpoint at an optimizer-step boundary; `micro` is the next micro-batch to run."""
        if not self.resumable:
            return
        step, folder = self.state.opt_step, self.checkpoints
        if self.run.main:
            folder.begin(step)
        self.acc.wait_for_everyone()
        try:  # a failed write leaves the earlier checkpoints as they were, the half-written one removed
            model = self.acc.unwrap_model(self.model)
            save_training_state(
                folder.tmp(step), model, self.optimizer, self.scheduler, self.acc.scaler, self.rank, self.run.main
            )
            self.acc.wait_for_everyone()
            if self.run.main:
                now = replace(self.state, epoch=epoch, micro=micro, elapsed=time.time() - self.started)
                folder.write_trainer_state(step, now, {**asdict(self.cfg), "processes": self.world})
        except BaseException:
            if self.run.main:
                folder.discard(step)
            raise
        if self.run.main:
            folder.publish(step)
        self.acc.wait_for_everyone()

    def finish(self, fit_started: float) -> dict:
        """The summary (best validation HR@1, steps, wall time, throughput of all processes over this
        invocation, validation and checkpoints included), also written as `summary.json`."""
        span = max(time.time() - fit_started, 1e-9)
        seen, tokens = self.acc.reduce(torch.tensor([self.seen, self.tokens], device=self.acc.device), "sum").tolist()
        summary = {
            "best_valid_hr@1": self.state.best if self.val_subset else None,
            "optimizer_steps": self.state.opt_step,
            "train_seconds": round(time.time() - self.started, 1),
            "processes": self.world,
            "distributed": str(self.acc.distributed_type.value),
            "grad_accum": self.cfg.grad_accum,
            "samples_per_second": round(seen / span, 2),
            "tokens_per_second": round(tokens / span, 1),
            "peak_memory_gib": round(peak_memory_gib(self.acc.device), 3),
            "layout": self.scorer.layout,
        }
        if self.run.main:
            write_json(self.run.out / SUMMARY, training_summary(summary))
        return summary
