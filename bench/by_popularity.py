"""Where models differ: HR@1 by how often the target was a training answer (quartiles of that count over the
measured samples) and by history length, each model's per-sample hit averaged over its runs (seeds).

    .venv/bin/python bench/by_popularity.py --train TRAIN --data EVAL NAME=RUN[,RUN...] NAME=RUN[,RUN...] ...

RUN is a folder holding predictions.jsonl (an `sdporec evaluate` or `sdporec baseline` output) made on EVAL;
the last column is the first model minus the last.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sdporec.data.samples import read_samples
from sdporec.errors import DataError
from sdporec.evaluation.compare import read_predictions  # noqa: E402
from sdporec.evaluation.metrics import per_sample_metrics  # noqa: E402


def mean_hits(runs: list[str], keys: list[str]) -> list[float]:
    """Each sample's HR@1 averaged over the runs; every run must hold every key."""
    per_run = []
    for run in runs:
        file, rows = read_predictions(run)
        missing = [k for k in keys if k not in rows]
        if missing:
            sys.exit(f"{file}: no prediction for sample {missing[0]} of --data ({len(missing)} missing)")
        per_run.append(per_sample_metrics([rows[k] for k in keys])["hr@1"])
    return [sum(hits) / len(per_run) for hits in zip(*per_run)]


def quartile(counts: list[int]) -> tuple[list[int], list[str]]:
    """Each sample's quartile of its count (0..3) and the quartiles' labels; where the counts take at most 8
    values, each value is its own group."""
    values = sorted(set(counts))
    if len(values) <= 8:
        return [values.index(c) for c in counts], [str(v) for v in values]
    ordered = sorted(counts)
    cuts = [ordered[len(ordered) * q // 4] for q in (1, 2, 3)]
    labels = [f"≤ {cuts[0]}", f"{cuts[0] + 1}–{cuts[1]}", f"{cuts[1] + 1}–{cuts[2]}", f"> {cuts[2]}"]
    return [sum(c > cut for cut in cuts) for c in counts], labels


def table(title: str, groups: list[int], labels: list[str], models: dict[str, list[float]]) -> str:
    names = list(models)
    lines = [
        f"**{title}**",
        "",
        f"| {title} | samples | " + " | ".join(names) + f" | {names[0]} − {names[-1]} |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for g, label in enumerate(labels):
        idx = [i for i, x in enumerate(groups) if x == g]
        if not idx:
            continue
        rate = {n: sum(models[n][i] for i in idx) / len(idx) for n in names}
        lines.append(
            f"| {label} | {len(idx)} | "
            + " | ".join(f"{rate[n]:.4f}" for n in names)
            + f" | {rate[names[0]] - rate[names[-1]]:+.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="the training samples (answers counted)")
    ap.add_argument("--data", required=True, help="the measured samples the predictions were made on")
    ap.add_argument("models", nargs="+", help="NAME=RUN[,RUN...]")
    args = ap.parse_args()
    answers = Counter(s.target for s in read_samples(args.train))
    samples = read_samples(args.data, "eval")
    keys = [s.key for s in samples]
    models = {}
    for spec in args.models:
        name, _, runs = spec.partition("=")
        if not runs:
            sys.exit(f"{spec!r}: expected NAME=RUN[,RUN...]")
        models[name] = mean_hits(runs.split(","), keys)
    popularity, pop_labels = quartile([answers[s.target] for s in samples])
    length, len_labels = quartile([len(s.history) for s in samples])
    print(table("training answers of the target", popularity, pop_labels, models), end="\n\n")
    print(table("history length", length, len_labels, models))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:  # a missing or malformed file: one line naming it
        sys.exit(f"by_popularity: {e}")
