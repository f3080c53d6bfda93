"""The Python API: what the CLI's commands do, as functions of the same config dataclasses.

Each function takes a config (`SFTConfig(...)`) or its settings as keyword arguments (`sft(train=...,
out=...)`), checks it as the CLI does (a `ConfigError` or `DataError` names the setting, file, row or
field at fault) and returns what the command prints or writes.
"""

from __future__ import annotations

from sdporec.commands.evaluate import EvaluateConfig, run_evaluate
from sdporec.commands.pipeline import PipelineConfig, run_pipeline
from sdporec.commands.preference import DPOConfig, SDPOConfig, run_preference
from sdporec.commands.prepare import PrepareConfig, run_prepare
from sdporec.commands.runner import run_command
from sdporec.commands.settings import configure
from sdporec.commands.sft import SFTConfig, run_sft
from sdporec.models.loading import quiet_transformers


def prepare(config: PrepareConfig | None = None, **settings) -> dict:
    """Write train/valid/test samples (`train.jsonl`, `valid.jsonl`, `test.jsonl`) and `items.txt` in
    `out`, from the built-in generator, MovieLens-100K or your own CSV log (`source`); returns the counts."""
    return _run(run_prepare, PrepareConfig, config, settings)


def sft(config: SFTConfig | None = None, **settings) -> dict:
    """Supervised fine-tuning on the target titles (`sdporec sft`); the model is saved in `out/model`.
    Returns the training summary (best validation HR@1, steps, wall time, throughput)."""
    return _run(run_sft, SFTConfig, config, settings)


def dpo(config: DPOConfig | None = None, **settings) -> dict:
    """DPO from an SFT checkpoint (`model`), also the frozen reference; K = 1 negative per sample by
    default (`sdporec dpo`). Returns the training summary."""
    return _run(run_preference, DPOConfig, config, settings)


def sdpo(config: SDPOConfig | None = None, **settings) -> dict:
    """Softmax-DPO from an SFT checkpoint (`model`), also the frozen reference; K = 3 negatives per sample
    by default (`sdporec sdpo`). Returns the training summary."""
    return _run(run_preference, SDPOConfig, config, settings)


def evaluate(config: EvaluateConfig | None = None, **settings) -> dict:
    """HR@k, NDCG@k and MRR of a checkpoint on a sample file (`protocol="ranking"`), or the paper's
    generation protocol (HR@1, ValidRatio); writes metrics.json and predictions.jsonl in `out` and returns
    the metrics."""
    return _run(run_evaluate, EvaluateConfig, config, settings)


def pipeline(config: PipelineConfig | None = None, **settings) -> dict:
    """Prepare (built-in data unless `data` is given), SFT, DPO, S-DPO and evaluate each on the test split
    (`sdporec pipeline`); returns {stage: metrics}."""
    return _run(run_pipeline, PipelineConfig, config, settings)


def _run(command, cls, config, settings: dict):
    """What each function does: the config checked as the CLI checks it, transformers' notices off, the command."""
    checked = configure(cls, config, settings)
    quiet_transformers()
    return run_command(command, checked)
