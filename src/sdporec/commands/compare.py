"""`sdporec compare`: evaluations of the same samples side by side, with paired bootstrap intervals of their
differences (`CompareConfig`, `run_compare`); the comparison itself is `sdporec.evaluation.compare`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdporec.commands.settings import setting
from sdporec.config import require_input
from sdporec.data.samples import read_samples
from sdporec.errors import require
from sdporec.evaluation.compare import FrequencyGroups, compare_predictions, format_comparison
from sdporec.files import atomic_write_text
from sdporec.outputs import require_apart


@dataclass
class CompareConfig:
    predictions: list[str] = setting(
        [],
        "predictions.jsonl files (or the folders holding them), one per model, "
        "two or more; one model's files on several sets of samples (seeds, in the "
        "same order for every model) joined by commas",
        positional=True,
    )
    names: list[str] = setting([], "a name per model (default: each first file's folder name)")
    resamples: int = setting(2000, "bootstrap resamples")
    seed: int = setting(0, "seed of the bootstrap draws")
    out: str = setting("", "also write the comparison as JSON to this file")
    by_frequency: str = setting(
        "",
        "training samples: also compare within cold, rare and frequent targets (by how often each target is a "
        "training target)",
    )
    rare: int = setting(10, "with --by-frequency: a rare target is a training target 1 to this many times")

    def check(self) -> None:
        require(
            len(self.predictions) >= 2,
            "predictions",
            "give at least two models' predictions.jsonl files "
            "(one model's files on several sets of samples are joined by commas)",
        )
        require(not self.names or len(self.names) == len(self.predictions), "names", "one name per model")
        require(len(set(self.names)) == len(self.names), "names", "names must differ")
        require(self.resamples >= 100, "resamples", "must be at least 100")
        require(self.rare >= 1, "rare", "must be at least 1")

    def resolve(self) -> None:
        require_input(self.by_frequency, "by_frequency")
        require_apart(self.out, {"predictions": self.predictions, "by_frequency": self.by_frequency})


def run_compare(cfg: CompareConfig) -> dict:
    groups = FrequencyGroups(read_samples(cfg.by_frequency, "train"), cfg.rare) if cfg.by_frequency else None
    result = compare_predictions(cfg.predictions, cfg.names, cfg.resamples, cfg.seed, groups)
    print(format_comparison(result))
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    return result
