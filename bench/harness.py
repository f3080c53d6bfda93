"""What the bench's scripts share: where things are, the results files' format (one reader, one writer), and
the timing helpers of the speed scripts.

A results file (bench/results/NAME.json) is written by bench/run.py from the spec bench/specs/NAME.yaml and
read by bench/tables.py; it holds `schema`, `spec`, `question`, `command`, `date`, `machine`, `seeds`,
`seconds` (wall time per seed, setup included), `rows` (id, label, n, metrics: name -> mean, std, per seed;
seconds per seed) and `differences` (a, b, metric, difference, low, high: paired bootstrap 95% intervals).
"""

from __future__ import annotations

import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # the real data sets, never copied into the repository
RESULTS = ROOT / "bench" / "results"
SPECS = ROOT / "bench" / "specs"
RESULTS_SCHEMA = "bench-results/1"
REQUIRED = ("rows", "command", "date", "machine", "seeds", "differences")


class ResultsError(Exception):
    """A spec or results file that cannot be used: one line naming the file and what is wrong."""


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"schema": RESULTS_SCHEMA, **results}, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def load_results(name: str, folder: Path = RESULTS) -> dict:
    path = folder / f"{name}.json"
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file (run bench/run.py bench/specs/{name}.yaml)") from None
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: not a readable results file ({' '.join(str(e).split())[:160]})") from None
    found = obj.get("schema") if isinstance(obj, dict) else None
    if found != RESULTS_SCHEMA:
        raise ResultsError(f"{path}: schema {found!r}, where {RESULTS_SCHEMA} was expected")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ResultsError(f"{path}: lacks {', '.join(missing)} ({RESULTS_SCHEMA})")
    return obj


def sync(device) -> None:
    """Wait for queued GPU work before reading a clock."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ranking_rate(
    model, codec, samples, batch: int, domain: str = "movies", task: str = "candidates"
) -> tuple[float, float]:
    """(samples/s, mean prompt tokens) of LMScorer (the prompt alone, of `task`) over `samples` (after one warm-up
    batch)."""
    from sdporec.data.prompts import build_prompt
    from sdporec.evaluation.scoring import LMScorer

    scorer = LMScorer(model, codec, domain, batch_size=batch, progress=False, task=task)
    scorer(samples[:batch])
    started = time.perf_counter()
    scorer(samples)
    rate = len(samples) / (time.perf_counter() - started)
    tokens = sum(len(codec.encode_prompt(build_prompt(s.history, s.candidates, domain, 0, task))) for s in samples)
    return rate, tokens / len(samples)


def movielens(work: Path, n: int):
    """MovieLens-100K as `prepare movielens-100k` writes it (in `work/prepared`, once): its training samples and
    the first `n` test samples."""
    from sdporec.data.samples import read_samples

    prepared = work / "prepared"
    if not (prepared / "test.jsonl").is_file():
        command = ["prepare", "movielens-100k", "--raw", str(SHARED / "ml-100k"), "--out", str(prepared)]
        subprocess.run([sys.executable, "-m", "sdporec", *command], check=True, stdout=subprocess.DEVNULL)
    train = read_samples(prepared / "train.jsonl", "train")
    return train, read_samples(prepared / "test.jsonl", "test")[:n]


def with_item_tokens(model, text_codec, titles, item_text: str):
    """A copy of `model` and its codec with one token per title (`sft --item-tokens`), each new row the mean of
    its title's token embeddings: speed does not depend on their values."""
    from sdporec.data.hybrid import HybridCodec, add_item_tokens
    from sdporec.models.item_rows import add_item_rows

    tokenizer = copy.deepcopy(text_codec.tokenizer)
    codec = HybridCodec(tokenizer, text_codec.chat, add_item_tokens(tokenizer, titles), item_text)
    hybrid = copy.deepcopy(model)
    add_item_rows(hybrid, tokenizer, codec.titles, codec.token_ids, "mean", "movies")
    return hybrid, codec


def speed_record(script: str, **fields) -> dict:
    """A speed script's record: date, machine, torch and the command that ran, then `fields`."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "command": f"bench/{script} " + " ".join(sys.argv[1:]),
        **fields,
    }
