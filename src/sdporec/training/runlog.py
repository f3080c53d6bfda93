"""A training run's logs: `train_log.jsonl` and `eval_log.jsonl` in the run directory (and tensorboard or
wandb when asked), cut back to a checkpoint's step on resume; and the run's peak memory."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdporec.errors import ConfigError
from sdporec.files import writing
from sdporec.runs import EVAL_LOG, TENSORBOARD, TRAIN_LOG

if TYPE_CHECKING:
    from sdporec.training.train_config import TrainOptions


def _step(log_line: str) -> float:
    """The optimizer step of a log line; a line cut short by a kill counts as after every checkpoint."""
    try:
        return json.loads(log_line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def peak_memory_gib(device) -> float:
    """Peak GPU memory allocated by PyTorch on a CUDA device; the process's peak RSS on a CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class RunLog:
    """`train_log.jsonl` and `eval_log.jsonl` in the run directory, always; tensorboard or wandb as well
    when asked (`report` reads only the JSONL files, so it needs no backend)."""

    def __init__(self, cfg: TrainOptions, out_dir: Path, enabled: bool = True, keep_until: int | None = None):
        """`keep_until`: resuming at that optimizer step, so later rows (written after the checkpoint by
        the interrupted run) are dropped; None starts empty logs. Only the main process writes."""
        self.paths = {"train": out_dir / TRAIN_LOG, "eval": out_dir / EVAL_LOG}
        self.enabled = enabled
        self._tb = self._wandb = None
        if not enabled:
            return
        for p in self.paths.values():
            kept = (
                []
                if keep_until is None or not p.is_file()
                else [line for line in p.read_text().splitlines() if _step(line) <= keep_until]
            )
            with writing(p):
                p.write_text("".join(line + "\n" for line in kept))
        if cfg.report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "setting 'report_to': tensorboard is not installed (pip install tensorboard)"
                ) from None
            self._tb = SummaryWriter(str(out_dir / TENSORBOARD))
        elif cfg.report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise ConfigError("setting 'report_to': wandb is not installed (pip install wandb)") from None
            self._wandb = wandb.init(project="sdporec", name=out_dir.name, dir=str(out_dir), config=asdict(cfg))

    def write(self, kind: str, row: dict) -> None:
        if not self.enabled:
            return
        # NaN (a gradient norm DeepSpeed does not report) is written as null: the logs stay strict JSON
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        with writing(self.paths[kind]), open(self.paths[kind], "a", encoding="utf-8") as f:
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
