"""Run directories: the one place that names the files sdporec's commands write and read, and reads and writes
the JSON ones, each with one versioned schema.

A JSON file sdporec writes carries its schema as `"schema": "NAME/VERSION"`. A reader accepts that schema, and
a file written before schemas existed where its shape is unambiguous; any other schema, or a file cut short, is
a `DataError` naming the file and the schema it expected. JSON Lines (logs, predictions) are read through
`files.read_jsonl`: a last line cut short by a kill is left out with a warning.

What a directory holds, by the command that wrote it:
- a training run (`sft`, `dpo`, `sdpo`): CONFIG, MODEL/, CHECKPOINTS/, TRAIN_LOG, EVAL_LOG, SUMMARY;
- an evaluation (`evaluate`, `baseline`): CONFIG, METRICS, PREDICTIONS;
- a pipeline: CONFIG, METRICS (every model's), TIMINGS, COMPARISON, data/, a training run per stage, eval/NAME/
  (an evaluation per model) and report/ (REPORT and figures);
- prepared data (`prepare`): the splits, items.txt, PREPARE_SUMMARY, PREPARE_CONFIG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sdporec.errors import DataError, brief
from sdporec.files import atomic_write_text, read_json_object, read_jsonl

CONFIG = "config.yaml"
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
REPORT = "report.md"
COMPARISON = "comparison.json"
TIMINGS = "timings.json"
MODEL = "model"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # inside each checkpoint
BASE_MODEL = "base_model"  # a LoRA run's own copy of the model it adapts, where it needs one
TENSORBOARD = "tensorboard"
PREPARE_SUMMARY = "prepare.json"
PREPARE_CONFIG = "prepare_config.yaml"

# What each kind of run writes in its directory: an earlier run's are replaced only with --overwrite. A training
# run keeps its reference cache (its entries are keyed by everything that changes them).
TRAINING_FILES = (
    CONFIG,
    MODEL,
    CHECKPOINTS,
    SUMMARY,
    TRAIN_LOG,
    EVAL_LOG,
    BASE_MODEL,
    TENSORBOARD,
    MODEL + ".tmp",
    MODEL + ".old",
)
EVALUATION_FILES = (METRICS, PREDICTIONS, CONFIG)

# The schema of each JSON file, written as its "schema" key.
EVALUATION_SCHEMA = "evaluation/1"  # METRICS of an evaluation: metric -> value, and how it was measured
PIPELINE_SCHEMA = "pipeline/1"  # METRICS of a pipeline: {"models": {name -> an evaluation's metrics}}
SUMMARY_SCHEMA = "training-summary/1"  # SUMMARY of a training run


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """`obj` as indented JSON, whole or not at all; NaN or infinity is refused (no reader of ours takes it)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _schema(path: Path, obj: dict, expected: str, legacy: bool) -> dict:
    """`obj` without its schema key, if it is `expected` (or absent where the file's shape is `legacy`)."""
    found = obj.pop("schema", None)
    if found == expected or (found is None and legacy):
        return obj
    what = f"schema {brief(found)}" if found is not None else "no schema"
    raise DataError(
        path,
        None,
        "schema",
        f"{what}, where {expected} was expected: not a file this sdporec writes "
        "there (written by another version, or another kind of file)",
    )


def evaluation_metrics(metrics: dict, extra: dict | None = None) -> dict:
    """An evaluation's METRICS: its metrics and how they were measured, stamped with its schema."""
    return {"schema": EVALUATION_SCHEMA, **metrics, **(extra or {})}


def read_evaluation_metrics(path: str | os.PathLike) -> dict:
    """An evaluation's METRICS (the file, or the directory holding it), without the schema key."""
    path = Path(path) / METRICS if Path(path).is_dir() else Path(path)
    obj = read_json_object(path)
    return _schema(path, obj, EVALUATION_SCHEMA, legacy="hr@1" in obj)


def pipeline_metrics(models: dict[str, dict]) -> dict:
    return {"schema": PIPELINE_SCHEMA, "models": models}


def read_pipeline_metrics(path: str | os.PathLike) -> dict[str, dict]:
    """A pipeline's METRICS: model name -> its metrics."""
    path = Path(path)
    obj = read_json_object(path)
    legacy = bool(obj) and all(isinstance(v, dict) and "hr@1" in v for v in obj.values())  # no schema: a string
    if legacy:
        return obj
    models = _schema(path, obj, PIPELINE_SCHEMA, legacy=False).get("models")
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise DataError(path, None, "models", "expected an object of model name -> metrics")
    return models


def read_metrics(path: str | os.PathLike) -> tuple[bool, dict]:
    """Either kind of METRICS, told apart by its schema: (True, name -> metrics) for a pipeline's, (False,
    metrics) for an evaluation's."""
    obj = read_json_object(path)
    pipeline = obj.get("schema") == PIPELINE_SCHEMA or ("schema" not in obj and "hr@1" not in obj)
    return (True, read_pipeline_metrics(path)) if pipeline else (False, read_evaluation_metrics(path))


def training_summary(summary: dict) -> dict:
    return {"schema": SUMMARY_SCHEMA, **summary}


def read_summary(path: str | os.PathLike) -> dict:
    """A training run's SUMMARY, without the schema key; {} where the run has none (it did not finish)."""
    path = Path(path)
    if not path.is_file():
        return {}
    obj = read_json_object(path)
    return _schema(path, obj, SUMMARY_SCHEMA, legacy="optimizer_steps" in obj)


def read_log(path: str | os.PathLike) -> list[dict]:
    """A training run's log rows (TRAIN_LOG, EVAL_LOG); [] where there is none. NaN is allowed in logs
    written before it was written as null."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line, row in read_jsonl(path, finite=False):
        if not isinstance(row, dict):
            raise DataError(path, f"line {line}", None, "expected a JSON object (a log row)")
        rows.append(row)
    return rows


def predictions_file(path: str | os.PathLike) -> Path:
    """PREDICTIONS itself, or the one inside a directory."""
    return Path(path) / PREDICTIONS if Path(path).is_dir() else Path(path)


def read_predictions(path: str | os.PathLike) -> tuple[str, dict[str, dict]]:
    """(the file read, sample -> row) from PREDICTIONS or a directory holding it. Rows are keyed by their `sample`
    (what the sample asks); files written before it existed by `key`. Every row needs `key` and either `rank`
    (a ranking evaluation: the target's 0-based rank) or `hit` (generation); NaN anywhere is refused."""
    file = predictions_file(path)
    rows: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for n, row in read_jsonl(file):
        if not isinstance(row, dict) or "key" not in row or not ("rank" in row or "hit" in row):
            raise DataError(
                file, f"line {n}", "key", "not a row of sdporec's predictions.jsonl (key and rank, or key and hit)"
            )
        rank = row.get("rank", 0)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise DataError(file, f"line {n}", "rank", f"{brief(rank)} is not a rank (a whole number from 0)")
        field = "sample" if "sample" in row else "key"
        key = str(row[field])
        if key in lines:
            raise DataError(
                file,
                f"line {n}",
                field,
                f"sample {key!r} repeats line {lines[key]}: a predictions file holds each sample once",
            )
        rows[key], lines[key] = row, n
    if not rows:
        raise DataError(file, None, None, "holds no predictions")
    return str(file), rows
