"""A training run before its loop: the splits read and checked, the accelerator, the run directory (`start_run`),
and the clean-up of a start that fails (`TrainingRun.setting_up`). The loop is `trainer.Trainer`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from sdporec.config import save_config
from sdporec.data.candidates import require_negatives, require_redrawable
from sdporec.data.codec import require_known_titles
from sdporec.data.samples import Sample, read_samples
from sdporec.errors import warn
from sdporec.outputs import REPLACED, SetAside, clear_outputs
from sdporec.runs import CHECKPOINTS, TRAINING_FILES
from sdporec.training.distributed import make_accelerator, set_seed
from sdporec.training.state import CheckpointFolder
from sdporec.training.train_config import TrainOptions


@dataclass
class TrainingRun:
    """A training run's directory, its checked data and its accelerator (`start_run`)."""

    out: Path
    train: list[Sample]
    valid: list[Sample]
    acc: object  # accelerate.Accelerator
    kept: frozenset[str] = frozenset()  # run outputs already there (a run being resumed): never removed here
    created: bool = False  # whether this run created `out`
    replaced: SetAside | None = None  # an earlier run's outputs (--overwrite), back in place if this run fails

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @contextmanager
    def setting_up(self, cfg: TrainOptions):
        """Model loading and the trainer's set-up; if they fail, what this run wrote so far is removed (what
        was there before stays), so a failed start leaves nothing a later run would take for its own. Once
        set up, the resolved config is saved."""
        try:
            yield
        except BaseException:
            if self.main:
                clear_outputs(str(self.out), tuple(name for name in TRAINING_FILES if name not in self.kept))
                self._put_back()
                if self.created and not any(self.out.iterdir()):
                    self.out.rmdir()
            raise
        if self.main:
            save_config(cfg, self.out)

    def fit(self, fit: Callable[[], dict]) -> dict:
        """The training loop `fit`. With --overwrite, if it fails (an error, Ctrl-C) before its first resumable
        checkpoint, the earlier run's outputs come back; once it has one, it stays (to continue with --resume)
        and the earlier outputs wait in OUT/.replaced. They are removed when a run into OUT finishes."""
        try:
            summary = fit()
        except BaseException:
            if self.main:
                self._put_back()
            raise
        if self.main:
            shutil.rmtree(self.out / REPLACED, ignore_errors=True)
        return summary

    def _put_back(self) -> None:
        if self.replaced is None or not self.replaced.held:
            return
        if CheckpointFolder(self.out / CHECKPOINTS).latest() is not None:
            warn(
                f"the run stopped after writing a resumable checkpoint: it stays in {self.out} (continue it with "
                f"--resume), and the earlier run's outputs are kept in {self.replaced.aside}"
            )
        elif self.replaced.restore():
            warn(
                f"the run did not finish: the earlier run's outputs in {self.out} are back in place, and what "
                "this run wrote there was removed"
            )


def start_run(cfg: TrainOptions, codec=None, model: str = "", negatives: int = 0) -> TrainingRun:
    """Read and check the splits, then create the accelerator and the run directory (an earlier run's
    outputs removed, with --overwrite): bad data writes nothing. The config is saved once the model is set
    up (`TrainingRun.setting_up`). Checked:
    lists can be re-drawn, `codec` (of the checkpoint `model` training starts from) knows every title, and
    every sample has `negatives` non-target candidates."""
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
    set_seed(cfg.seed)  # model creation and LoRA initialisation draw from these generators
    out = Path(cfg.out)
    created = not out.exists()
    replaced = None
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            replaced = SetAside(out, TRAINING_FILES)
    acc.wait_for_everyone()
    kept = frozenset(name for name in TRAINING_FILES if (out / name).exists())
    return TrainingRun(out, train, valid, acc, kept, created, replaced)
