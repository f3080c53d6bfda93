"""`sdporec compare`: two or more evaluations of the same samples, each metric with the paired bootstrap 95%
interval of every difference, and whether the interval says better, worse or not distinguishable.

Inputs are `predictions.jsonl` files written by `evaluate` or `baseline` (a run's `eval/` folder works too);
they must hold the same samples. Samples are paired by what they ask (history, candidates, target: the rows'
`sample`), not by row number, so files of one data set evaluated in any order pair, files of different
samples are refused, and the interval reflects only how the models differ on the same questions. The command
is `sdporec.commands.compare`.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from sdporec.errors import ConfigError, DataError
from sdporec.evaluation.metrics import paired_bootstrap, per_sample_metrics
from sdporec.files import read_text, text_lines


def read_predictions(path: str) -> tuple[str, dict[str, dict]]:
    """(the file read, sample -> row) from a predictions.jsonl file or a folder holding one. Rows are keyed by
    their `sample` (what the sample asks, `Sample.content_key`); files written before it existed by `key`."""
    file = Path(path) / "predictions.jsonl" if Path(path).is_dir() else Path(path)
    rows: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for n, line in enumerate(text_lines(read_text(file)), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(file, f"line {n}", None, f"not valid JSON ({e})") from None
        if not isinstance(row, dict) or "key" not in row or not ("rank" in row or "hit" in row):
            raise DataError(file, f"line {n}", "key", "not a row of sdporec's predictions.jsonl (key and rank, "
                            "or key and hit)")
        field = "sample" if "sample" in row else "key"
        key = str(row[field])
        if key in lines:
            raise DataError(file, f"line {n}", field, f"sample {key!r} repeats line {lines[key]}: a predictions file "
                            "holds each sample once")
        rows[key], lines[key] = row, n
    if not rows:
        raise DataError(file, None, None, "holds no predictions")
    return str(file), rows


def require_same_samples(first: tuple[str, dict[str, dict]], other: tuple[str, dict[str, dict]]) -> None:
    """Two evaluations pair only if they asked the same questions: else one line with how many differ and one."""
    (file_a, a), (file_b, b) = first, other
    only_a, only_b = [k for k in a if k not in b], [k for k in b if k not in a]   # in file order
    if not only_a and not only_b:
        return
    file, rows, odd = (file_a, a, only_a[0]) if only_a else (file_b, b, only_b[0])
    example = f"{file}'s {rows[odd]['key']} (target {rows[odd].get('target')!r})"
    raise DataError(file_b, None, "sample", f"{len(only_a)} of {len(a)} samples of {file_a} are not in it and "
                    f"{len(only_b)} of its {len(b)} not in {file_a}, e.g. {example}: compare evaluations of the "
                    "same samples")


def compare_predictions(predictions: list[str], names: list[str] | None = None, resamples: int = 2000,
                        seed: int = 0) -> dict:
    """Every metric of each predictions file (or folder holding one), and the paired bootstrap 95% interval of
    every pairwise difference with its verdict; `names`: one per file (default: each file's folder name)."""
    files = [read_predictions(p) for p in predictions]
    names = names or [Path(f).parent.name or f for f, _ in files]
    if len(set(names)) != len(names):
        names = [f for f, _ in files]
    if len({"sample" in next(iter(rows.values())) for _, rows in files}) > 1:
        raise ConfigError("setting 'predictions': some files key samples by content and some by row number "
                          "(written by an older sdporec): evaluate them again with this version")
    keys = sorted(files[0][1])
    for other in files[1:]:
        require_same_samples(files[0], other)
    per = {name: per_sample_metrics([rows[k] for k in keys]) for name, (_, rows) in zip(names, files)}
    # Both protocols have HR@1, so a ranking and a generation evaluation compare on it (as the paper does).
    metrics = [m for m in per[names[0]] if all(m in per[n] for n in names)]
    result = {"n": len(keys), "resamples": resamples, "seed": seed,
              "metrics": {n: {m: sum(per[n][m]) / len(keys) for m in metrics} for n in names},
              "differences": []}
    for a, b in combinations(names, 2):
        for m in metrics:
            diff, low, high = paired_bootstrap(per[a][m], per[b][m], resamples, seed)
            verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
            result["differences"].append({"a": a, "b": b, "metric": m, "difference": diff, "low": low,
                                          "high": high, "a_is": verdict})
    return result


def format_comparison(result: dict) -> str:
    names = list(result["metrics"])
    metrics = list(result["metrics"][names[0]])
    lines = [f"{result['n']} samples, paired bootstrap ({result['resamples']} resamples), 95% intervals", "",
             f"{'':<14}" + "".join(f"{m:>10}" for m in metrics)]
    lines += [f"{n:<14}" + "".join(f"{result['metrics'][n][m]:>10.4f}" for m in metrics) for n in names]
    width = max(len(f"{d['a']} - {d['b']}") for d in result["differences"]) + 2
    lines += ["", f"{'a - b':<{width}}{'metric':<12}{'difference':>10}  {'95% interval':<22}a is"]
    for d in result["differences"]:
        pair = f"{d['a']} - {d['b']}"
        lines.append(f"{pair:<{width}}{d['metric']:<12}{d['difference']:>+10.4f}  [{d['low']:+.4f}, {d['high']:+.4f}]"
                     f"{'':<4}{d['a_is']}")
    return "\n".join(lines)
