"""`sdporec compare`: two or more evaluations of the same samples, each metric with the paired bootstrap 95%
interval of every difference, and whether the interval says better, worse or not distinguishable.

Inputs are `predictions.jsonl` files written by `evaluate` or `baseline` (a run's `eval/` folder works too);
they must hold the same samples. Samples are paired by what they ask (history, candidates, target: the rows'
`sample`), not by row number, so files of one data set evaluated in any order pair, files of different
samples are refused, and the interval reflects only how the models differ on the same questions. The command
is `sdporec.commands.compare`.

Several files joined by commas are one model measured on several sets of samples (seeds, say), in the same
order for every model. The sets are pooled evaluation by evaluation, and the bootstrap draws samples, each with
every evaluation of it (a cluster bootstrap): sets may hold different samples, the same samples (seeds on one
test file) or some of each, and a sample that two seeds measured never counts as two independent ones.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from sdporec.errors import ConfigError, DataError
from sdporec.evaluation.metrics import paired_bootstrap, per_sample_metrics
from sdporec.runs import read_predictions


def require_same_samples(first: tuple[str, dict[str, dict]], other: tuple[str, dict[str, dict]]) -> None:
    """Two evaluations pair only if they asked the same questions: else one line with how many differ and one."""
    (file_a, a), (file_b, b) = first, other
    only_a, only_b = [k for k in a if k not in b], [k for k in b if k not in a]  # in file order
    if not only_a and not only_b:
        return
    file, rows, odd = (file_a, a, only_a[0]) if only_a else (file_b, b, only_b[0])
    example = f"{file}'s {rows[odd]['key']} (target {rows[odd].get('target')!r})"
    raise DataError(
        file_b,
        None,
        "sample",
        f"{len(only_a)} of {len(a)} samples of {file_a} are not in it and "
        f"{len(only_b)} of its {len(b)} not in {file_a}, e.g. {example}: compare evaluations of the "
        "same samples",
    )


def model_files(entry: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One model's predictions files: a path (one that exists is never split), paths joined by commas (one per
    set of samples, e.g. per seed), or a list of paths."""
    if isinstance(entry, os.PathLike) or (isinstance(entry, str) and Path(entry).exists()):
        return [os.fspath(entry)]
    paths = entry.split(",") if isinstance(entry, str) else [os.fspath(p) for p in entry]
    if not paths or any(not p.strip() for p in paths):
        raise ConfigError(
            f"setting 'predictions': {entry!r} has an empty path (join one model's files by commas, "
            "with no empty parts)"
        )
    return [p.strip() for p in paths]


def protocol_of(rows: dict[str, dict]) -> str:
    """What an evaluation measured: "generation", "ranking" (each sample's candidate list), "catalogue" (the
    whole catalogue ranked) or "catalogue generation" (decoding constrained to the whole catalogue)."""
    first = next(iter(rows.values()))
    if "rank" not in first:
        return "catalogue generation" if "catalogue" in first else "generation"
    return "catalogue" if "catalogue" in first else "ranking"


def require_one_protocol(files: list[tuple[str, dict[str, dict]]]) -> None:
    """One model's files are all of one protocol (else its HR@1 would mix them)."""
    first, protocol = files[0][0], protocol_of(files[0][1])
    for file, rows in files[1:]:
        other = protocol_of(rows)
        if other != protocol:
            raise DataError(
                file,
                None,
                "rank",
                f"a {other} evaluation joined to {first}, a {protocol} one: one model's files must be of one protocol",
            )


def require_comparable(models: list[list[tuple[str, dict[str, dict]]]]) -> None:
    """A whole-catalogue ranking is compared only with others (a rank among 20 and among thousands differ)."""
    whole = {protocol_of(m[0][1]).startswith("catalogue"): m[0][0] for m in models}
    if len(whole) > 1:
        raise ConfigError(
            f"setting 'predictions': {whole[True]} ranks the whole catalogue and {whole[False]} a candidate list "
            "(or generates): compare evaluations of one kind"
        )


def require_new_keys(models: list[list[tuple[str, dict[str, dict]]]]) -> None:
    by_content = {"sample" in next(iter(rows.values())): file for m in models for file, rows in m}
    if len(by_content) > 1:
        raise ConfigError(
            f"setting 'predictions': {by_content[False]} keys samples by row number (written by an "
            f"older sdporec) and {by_content[True]} by content: evaluate the older again"
        )


def read_models(predictions: Sequence) -> list[list[tuple[str, dict[str, dict]]]]:
    """Each model's predictions, one per set of samples; the i-th file of every model must hold the same samples."""
    models = [[read_predictions(p) for p in model_files(entry)] for entry in predictions]
    if len({len(m) for m in models}) > 1:
        raise ConfigError(
            "setting 'predictions': every model needs as many files as the others, one per set of "
            f"samples in the same order (got {', '.join(str(len(m)) for m in models)})"
        )
    require_new_keys(models)
    for m in models:
        require_one_protocol(m)
    require_comparable(models)
    for i, first in enumerate(models[0]):
        for other in models[1:]:
            require_same_samples(first, other[i])
    return models


class FrequencyGroups:
    """Samples grouped by how often their target is a training target: cold (never), rare (1 to `rare` times),
    frequent (more often)."""

    NAMES = ("cold", "rare", "frequent")

    def __init__(self, train: Sequence, rare: int = 10):
        self.counts = Counter(s.target for s in train)
        self.rare = rare
        self.bounds = {"cold": "0", "rare": f"1-{rare}", "frequent": f">{rare}"}

    def __call__(self, target: str) -> str:
        n = self.counts[target]
        return "cold" if n == 0 else "rare" if n <= self.rare else "frequent"


def compare_predictions(
    predictions: Sequence,
    names: list[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    groups: FrequencyGroups | None = None,
) -> dict:
    """Every metric of each model's predictions, and the paired bootstrap 95% interval of every pairwise
    difference with its verdict. An entry of `predictions` is one predictions file (or folder holding one), or
    several (joined by commas, or a list): one model measured on several sets of samples (seeds), in the same
    order for every model. The sets are pooled evaluation by evaluation, and the bootstrap draws samples: a
    sample that several sets hold is drawn with all its evaluations. `names`: one per entry (default: each
    first file's folder name). `groups`: the same again within each group of targets (`result["groups"]`)."""
    models = read_models(predictions)
    names = names or [Path(m[0][0]).parent.name or m[0][0] for m in models]
    if len(set(names)) != len(names):
        names = [",".join(f for f, _ in m) for m in models]
    keys = [sorted(rows) for _, rows in models[0]]
    result = _compare(models, names, keys, resamples, seed)
    if groups is not None:
        result["groups"] = {}
        for group in groups.NAMES:
            picked = [[k for k in ks if groups(rows[k]["target"]) == group] for ks, (_, rows) in zip(keys, models[0])]
            if any(picked):
                result["groups"][group] = {
                    "bounds": groups.bounds[group],
                    **_compare(models, names, picked, resamples, seed),
                }
    return result


def _compare(models: list, names: list[str], keys: list[list[str]], resamples: int, seed: int) -> dict:
    """The metrics and paired intervals over the samples `keys` names (one list per set of samples)."""
    labels = [k for ks in keys for k in ks]
    per = {
        name: [per_sample_metrics([rows[k] for k in ks]) for (_, rows), ks in zip(files, keys) if ks]
        for name, files in zip(names, models)
    }
    # Both protocols have HR@1, so a ranking and a generation evaluation compare on it (as the paper does).
    metrics = [m for m in per[names[0]][0] if all(m in per[n][0] for n in names)]
    per = {name: {m: [x for part in parts for x in part[m]] for m in metrics} for name, parts in per.items()}
    n = len(labels)
    result = {
        "n": n,
        "sets": [len(k) for k in keys],
        "distinct_samples": len(set(labels)),
        "resamples": resamples,
        "seed": seed,
        "metrics": {name: {m: sum(per[name][m]) / n for m in metrics} for name in names},
        "differences": [],
    }
    for a, b in combinations(names, 2):
        for m in metrics:
            diff, low, high = paired_bootstrap(
                per[a][m], per[b][m], resamples, seed, clusters=labels if len(keys) > 1 else None
            )
            verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
            result["differences"].append(
                {"a": a, "b": b, "metric": m, "difference": diff, "low": low, "high": high, "a_is": verdict}
            )
    return result


def format_comparison(result: dict) -> str:
    """The comparison as text, and the same for each group of targets after it."""
    text = _format(result)
    for group, part in result.get("groups", {}).items():
        title = f"{group} targets (a training target {part['bounds']} times)"
        text += f"\n\n{title}\n{'-' * len(title)}\n" + _format(part)
    return text


def _format(result: dict) -> str:
    names = list(result["metrics"])
    metrics = list(result["metrics"][names[0]])
    sets = result.get("sets", [result["n"]])
    head = f"{result['n']} samples"
    if len(sets) > 1:
        head = (
            f"{result['n']} evaluations of {result['distinct_samples']} samples in {len(sets)} sets "
            f"({', '.join(map(str, sets))}), each sample drawn with all its evaluations"
        )
    lines = [
        f"{head}, paired bootstrap ({result['resamples']} resamples), 95% intervals",
        "",
        f"{'':<14}" + "".join(f"{m:>10}" for m in metrics),
    ]
    lines += [f"{n:<14}" + "".join(f"{result['metrics'][n][m]:>10.4f}" for m in metrics) for n in names]
    width = max(len(f"{d['a']} - {d['b']}") for d in result["differences"]) + 2
    lines += ["", f"{'a - b':<{width}}{'metric':<12}{'difference':>10}  {'95% interval':<22}a is"]
    for d in result["differences"]:
        pair = f"{d['a']} - {d['b']}"
        lines.append(
            f"{pair:<{width}}{d['metric']:<12}{d['difference']:>+10.4f}  [{d['low']:+.4f}, {d['high']:+.4f}]"
            f"{'':<4}{d['a_is']}"
        )
    return "\n".join(lines)
