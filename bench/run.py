"""Runs an experiment spec (bench/specs/NAME.yaml) and writes its results file (bench/results/NAME.json).

    .venv/bin/python bench/run.py bench/specs/NAME.yaml [--work runs/specs] [--seeds 0 1 2] [--jobs 3] [--dry-run]

A spec is declarative: per seed, `setup` commands (data, a whole pipeline) and then `rows`, each a list of
`steps` (sdporec commands, or the runner's own `split-tail`, `subset` and `catalogue`) ending in an evaluation folder
(`eval`, default the row's own folder) that holds `metrics.json` and `predictions.jsonl`. `compare` names row
pairs whose differences get paired bootstrap 95% intervals (`sdporec compare`, the seeds pooled); `groups: TRAIN`
(one seed) does that again within cold, rare (1 to `rare`, default 10) and frequent targets of that training
file. In commands, `{seed}`,
`{seed_dir}` (this seed's folder), `{data}` ({seed_dir}/data), `{shared}` (../shared/data), `{row}` (this row's
folder) and `{ID}` (the folder of the row ID) are filled in. Every command is checked against sdporec's own
parser before anything runs.

Finished work is kept: a step of a setup or row is not run again while it and the steps before it have not
changed, so an interrupted run resumes. The results file holds the metrics (mean, std and per seed), the
intervals, the command, the machine and the date; never weights or predictions. `bench/tables.py` makes the
tables of README.md and docs/results.md from the results files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from harness import RESULTS, ROOT, SHARED, ResultsError, write_results
from steps import BUILTINS

METRICS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "valid_ratio")


@dataclass
class Row:
    id: str
    label: str
    steps: list[str] = field(default_factory=list)
    eval: str = "{row}"


@dataclass
class Spec:
    path: Path
    name: str
    question: str
    seeds: list[int]
    setup: list[str]
    rows: list[Row]
    compare: list[tuple[str, str]]
    metrics: list[str]
    groups: str = ""  # a training file: each compared pair again within cold / rare / frequent targets
    rare: int = 10


def load_spec(path: Path) -> Spec:
    """The spec at `path`, checked: known keys, row ids, pairs to compare, and every command's flags."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ResultsError(f"{path}: cannot be read ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(raw, dict):
        raise ResultsError(f"{path}: expected a mapping (question, seeds, setup, rows, compare, metrics)")
    unknown = set(raw) - {"question", "seeds", "setup", "rows", "compare", "metrics", "groups", "rare"}
    if unknown:
        raise ResultsError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    rows = []
    for i, r in enumerate(raw.get("rows") or []):
        if not isinstance(r, dict) or not str(r.get("id", "")).isidentifier():
            raise ResultsError(f"{path}: row {i + 1} needs an `id` that is a name (letters, digits, _)")
        extra = set(r) - {"id", "label", "steps", "eval"}
        if extra:
            raise ResultsError(f"{path}: row {r['id']}: unknown key(s) {', '.join(sorted(extra))}")
        rows.append(Row(r["id"], r.get("label", r["id"]), list(r.get("steps") or []), r.get("eval", "{row}")))
    ids = [r.id for r in rows]
    if not rows or len(set(ids)) != len(ids):
        raise ResultsError(f"{path}: give rows with distinct ids")
    compare = [tuple(pair) for pair in raw.get("compare") or []]
    for pair in compare:
        if len(pair) != 2 or not set(pair) <= set(ids):
            raise ResultsError(f"{path}: compare {list(pair)}: each pair names two row ids of {', '.join(ids)}")
    metrics = list(raw.get("metrics") or ["hr@1", "ndcg@5", "mrr"])
    if not set(metrics) <= set(METRICS):
        raise ResultsError(f"{path}: metrics must be among {', '.join(METRICS)}")
    spec = Spec(
        path,
        path.stem,
        str(raw.get("question", "")),
        [int(s) for s in raw.get("seeds") or [0]],
        list(raw.get("setup") or []),
        rows,
        compare,
        metrics,
        str(raw.get("groups") or ""),
        int(raw.get("rare", 10)),
    )
    one_seed_groups(spec)
    for where, command in commands(spec, Path("/work"), spec.seeds[0]):
        check_command(spec, where, command)
    return spec


def one_seed_groups(spec: Spec) -> None:
    if spec.groups and len(spec.seeds) > 1:
        raise ResultsError(f"{spec.path}: groups: each seed's training file groups its own targets; give one seed")


def fill(text: str, spec: Spec, seed_dir: Path, seed: int, row: Row | None) -> str:
    folders = {r.id: str(seed_dir / r.id) for r in spec.rows}
    try:
        return text.format(
            seed=seed,
            seed_dir=seed_dir,
            data=seed_dir / "data",
            shared=SHARED,
            row=folders[row.id] if row else "",
            **folders,
        )
    except (KeyError, IndexError, ValueError) as e:
        raise ResultsError(f"{spec.path}: {text!r}: unknown placeholder {e}") from None


def commands(spec: Spec, work: Path, seed: int) -> list[tuple[str, list[str]]]:
    """(where, sdporec arguments) of every command of one seed, in order."""
    seed_dir = work / f"seed{seed}"
    out = [(f"setup step {i + 1}", shlex.split(fill(c, spec, seed_dir, seed, None))) for i, c in enumerate(spec.setup)]
    for row in spec.rows:
        out += [
            (f"row {row.id} step {i + 1}", shlex.split(fill(c, spec, seed_dir, seed, row)))
            for i, c in enumerate(row.steps)
        ]
    return out


def check_command(spec: Spec, where: str, argv: list[str]) -> None:
    """Parsed by sdporec's own parser (nothing runs): an unknown command or flag is a ResultsError."""
    from sdporec.cli import build_parser

    if argv[:1] and argv[0] in BUILTINS:
        _, usage, ok = BUILTINS[argv[0]]
        if not ok(argv[1:]):
            raise ResultsError(f"{spec.path}: {where}: give `{usage}`")
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "not a command"
        raise ResultsError(f"{spec.path}: {where}: `sdporec {shlex.join(argv)[:120]}`: {message}") from None


def digest(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:16]


def run_once(marker: Path, argvs: list[list[str]], dry: bool) -> float:
    """Run `argvs` in order, each recorded in `marker` once done: the steps whose commands match the recorded
    ones from the start are kept, the rest run again (a later step may read what an earlier one wrote). The
    seconds the steps took, kept ones included."""
    done = json.loads(marker.read_text()) if marker.is_file() else {"steps": [], "seconds": []}
    wanted = [digest(a) for a in argvs]
    kept = 0
    while kept < min(len(done["steps"]), len(wanted)) and done["steps"][kept] == wanted[kept]:
        kept += 1
    record = {"steps": done["steps"][:kept], "seconds": done["seconds"][:kept]}
    for argv in argvs[kept:]:
        builtin = argv[0] in BUILTINS
        print(f"$ {'' if builtin else 'sdporec '}{shlex.join(argv)}", flush=True)
        if dry:
            continue
        started = time.time()
        if builtin:
            BUILTINS[argv[0]][0](*argv[1:])
        else:
            subprocess.run([sys.executable, "-m", "sdporec", *argv], check=True, stdout=subprocess.DEVNULL)
        record["steps"].append(digest(argv))
        record["seconds"].append(round(time.time() - started, 1))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record))
    return round(sum(record["seconds"]), 1)


def run_seed(spec: Spec, work: Path, seed: int, dry: bool) -> dict[str, dict]:
    """Setup and rows of one seed; row id -> {"eval": folder, "seconds": wall time of its steps}, and "" ->
    {"seconds": the setup's}."""
    seed_dir = work / f"seed{seed}"
    every = commands(spec, work, seed)
    setup = [argv for where, argv in every if where.startswith("setup")]
    done = {"": {"seconds": run_once(seed_dir / ".setup.json", setup, dry)}}
    for row in spec.rows:
        argvs = [argv for where, argv in every if where.startswith(f"row {row.id} ")]
        seconds = run_once(seed_dir / f".{row.id}.json", argvs, dry)
        done[row.id] = {"eval": fill(row.eval, spec, seed_dir, seed, row), "seconds": seconds}
    return done


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def results(spec: Spec, per_seed: dict[int, dict[str, dict]], argv: list[str], work: Path) -> dict:
    """The results file's content, from the finished evaluations of every seed."""
    from sdporec.evaluation.compare import compare_predictions
    from sdporec.runs import read_evaluation_metrics

    rows = []
    for row in spec.rows:
        found = [read_evaluation_metrics(per_seed[s][row.id]["eval"]) for s in spec.seeds]
        metrics = {}
        for m in spec.metrics:
            values = [f[m] for f in found if f.get(m) is not None]
            if values:
                metrics[m] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else None,
                    "seeds": values,
                }
        seconds = [per_seed[s][row.id]["seconds"] for s in spec.seeds]
        rows.append({"id": row.id, "label": row.label, "n": found[0].get("n"), "metrics": metrics, "seconds": seconds})
    differences, groups = [], {}
    labels = {r.id: r.label for r in spec.rows}
    by_frequency = frequency_groups(spec, work)
    for a, b in spec.compare:  # pair by pair: a pair's intervals do not depend on the other rows
        got = compare_predictions(
            [[per_seed[s][i]["eval"] for s in spec.seeds] for i in (a, b)],
            [labels[a], labels[b]],
            seed=0,
            groups=by_frequency,
        )
        differences += kept_differences(spec, got)
        for name, part in got.get("groups", {}).items():
            group = groups.setdefault(
                name, {"bounds": part["bounds"], "n": part["n"], "metrics": {}, "differences": []}
            )
            for label, values in part["metrics"].items():
                group["metrics"][label] = {m: v for m, v in values.items() if m in spec.metrics}
            group["differences"] += kept_differences(spec, part)
    return {
        "spec": str(spec.path.relative_to(ROOT) if spec.path.is_relative_to(ROOT) else spec.path),
        "question": spec.question,
        "command": "python bench/run.py " + shlex.join(argv),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "seeds": spec.seeds,
        "seconds": [round(sum(r["seconds"] or 0 for r in per_seed[s].values()), 1) for s in spec.seeds],
        "rows": rows,
        "differences": differences,
        **({"groups": groups} if groups else {}),
    }


def frequency_groups(spec: Spec, work: Path):
    """The spec's cold / rare / frequent grouping of targets by its training file (None without `groups`)."""
    if not spec.groups:
        return None
    from sdporec.data.samples import read_samples
    from sdporec.evaluation.compare import FrequencyGroups

    seed = spec.seeds[0]
    train = fill(spec.groups, spec, work / f"seed{seed}", seed, None)
    return FrequencyGroups(read_samples(train, "train"), spec.rare)


def kept_differences(spec: Spec, compared: dict) -> list[dict]:
    return [
        {k: d[k] for k in ("a", "b", "metric", "difference", "low", "high")}
        for d in compared["differences"]
        if d["metric"] in spec.metrics
    ]


def side_by_side(spec_file: Path, work: Path, seeds: list[int], jobs: int) -> None:
    """The seeds' setups and rows in `jobs` processes at a time, each with its share of the cores (a small model
    uses two threads poorly); the results are made afterwards from what they finished."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    for start in range(0, len(seeds), jobs):
        argvs = [
            [sys.executable, __file__, str(spec_file), "--work", str(work), "--seeds", str(s), "--no-results"]
            for s in seeds[start : start + jobs]
        ]
        procs = [subprocess.Popen(a, env=env) for a in argvs]
        failed = [a for a, p in zip(argvs, procs) if p.wait() != 0]
        if failed:
            raise ResultsError(f"{spec_file}: seed {failed[0][-2]} failed (its output is above)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "specs", help="where the runs go")
    parser.add_argument("--seeds", type=int, nargs="+", help="instead of the spec's seeds")
    parser.add_argument("--out", type=Path, help="the results file (default bench/results/NAME.json)")
    parser.add_argument("--dry-run", action="store_true", help="check the spec and print its commands")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side, each with cores / N threads")
    parser.add_argument("--no-results", action="store_true", help=argparse.SUPPRESS)  # a side-by-side seed
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec.resolve())
        spec.seeds = args.seeds or spec.seeds
        one_seed_groups(spec)
        work = args.work / spec.name
        if args.jobs > 1 and len(spec.seeds) > 1 and not args.dry_run:
            side_by_side(args.spec, args.work, spec.seeds, args.jobs)
        per_seed = {seed: run_seed(spec, work, seed, args.dry_run) for seed in spec.seeds}
        if args.dry_run or args.no_results:
            return 0
        out = args.out or RESULTS / f"{spec.name}.json"
        write_results(out, results(spec, per_seed, [str(args.spec), *argv[1:]], work))
        print(f"results: {out}")
    except ResultsError as e:
        print(f"bench/run.py: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(
            f"bench/run.py: error: `sdporec {shlex.join(e.cmd[3:])[:200]}` failed (exit {e.returncode})",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
