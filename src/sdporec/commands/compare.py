"""`sdporec compare`: evaluations of the same samples side by side, with paired bootstrap intervals of their
differences (`CompareConfig`, `run_compare`); the comparison itself is `sdporec.evaluation.compare`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdporec.commands.settings import setting
from sdporec.errors import require
from sdporec.evaluation.compare import compare_predictions, format_comparison
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

    def resolve(self) -> None:
        require_apart(self.out, {"predictions": self.predictions})


def run_compare(cfg: CompareConfig) -> dict:
    result = compare_predictions(cfg.predictions, cfg.names, cfg.resamples, cfg.seed)
    print(format_comparison(result))
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    return result
