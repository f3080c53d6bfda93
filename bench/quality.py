"""The accuracy table: baselines and sdporec's LM stages on the same candidate lists.

Data sets (read from ../shared/data, never copied into the repository):
- LastFM: the paper's training file with candidate lists re-drawn every epoch; measured on
  resampled/lastfm-val.json (negatives drawn per sample). LastFM has no validation split of its own, so the
  last 5% of the training rows are held out for checkpoint selection and early stopping.
- MovieLens-100K: `sdporec prepare movielens-100k` (users 8:1:1, negatives drawn per sample), test split.
Rows: popularity, item counts, SASRec, GRU4Rec, and SFT, DPO (K = 1), S-DPO (K = 3) with the built-in
backbone, ranked (HR@1, NDCG@5, MRR) and, for the LM rows, by the paper's generation protocol (HR@1,
ValidRatio). A second table repeats the LM rows with the paper's leaky seeding, for comparison with papers.
Each row's wall time includes its training. Finished rows are kept, so an interrupted run resumes.

    .venv/bin/python bench/quality.py [--out runs/quality] [--only lastfm|movielens|leaky] [--seeds 0 1 2]
        [--sft-epochs N] [--hidden H --layers L] [--baseline-epochs N] [--sasrec-args "..."]
        [--sft-args "..."] [--pref-args "..."] [--variant-args "..."] [--jobs N]

Seeded rows (SASRec, GRU4Rec and the LM rows) run once per seed; tables show mean ± std over seeds, and the
paired bootstrap 95% intervals of the key differences (each sample's metric averaged over seeds first).
`--jobs N` (with `--only lastfm` or `--only movielens`) runs the seeds in N processes side by side, each with
cores / N threads (a model this small uses two threads poorly), then makes the tables from their rows.
The LM rows rank as `sdporec evaluate` does by default: by the prompt alone, or, for models that learned the
history (`--sft-args "--history-weight ..."`), at the history readout's weight λ their training chose on the
validation rows with the checkpoint; `bench/readouts.py --runs OUT` sweeps λ on the finished models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sdporec.runs import MODEL, read_evaluation_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = [sys.executable, "-m", "sdporec"]


def sh(*args: str) -> None:
    if args[0] in ("prepare", "sft", "dpo", "sdpo", "evaluate", "baseline"):
        args = (*args, "--overwrite")  # a rerun of the bench replaces its runs
    print("$ sdporec " + " ".join(args), flush=True)
    subprocess.run(BIN + list(args), check=True, stdout=subprocess.DEVNULL)


def timed(out: Path, fn, table_only: bool = False) -> dict | None:
    """Run fn once per row directory; its wall time is stored beside the metrics. `table_only`: never run
    it (None where the row has not finished)."""
    done = out / "row.json"
    if done.is_file():
        return json.loads(done.read_text())
    if table_only:
        return None
    start = time.time()
    fn()
    row = {"seconds": round(time.time() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row))
    return row


def metrics(path: Path) -> dict:
    """The metrics of the evaluation in `path` (an `evaluate` or `baseline` output)."""
    return read_evaluation_metrics(path)


def lastfm_data(work: Path, leaky: bool) -> dict[str, str]:
    """train / valid (last 5% of training rows) / eval files."""
    from sdporec.data.samples import read_samples, write_samples

    src = SHARED / "lastfm" / ("lastfm-train.json" if leaky else "resampled/lastfm-train.json")
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "valid.jsonl").is_file():
        rows = read_samples(src, "train")
        cut = int(len(rows) * 0.95)
        write_samples(work / "train.jsonl", rows[:cut])
        write_samples(work / "valid.jsonl", rows[cut:])
    evalfile = SHARED / "lastfm" / ("lastfm-val.json" if leaky else "resampled/lastfm-val.json")
    return {"train": str(work / "train.jsonl"), "valid": str(work / "valid.jsonl"), "eval": str(evalfile)}


def movielens_data(work: Path, leaky: bool) -> dict[str, str]:
    if not (work / "test.jsonl").is_file():
        sh(
            "prepare",
            "movielens-100k",
            "--raw",
            str(SHARED / "ml-100k"),
            "--out",
            str(work),
            *(["--paper-seeding"] if leaky else []),
        )
    return {"train": str(work / "train.jsonl"), "valid": str(work / "valid.jsonl"), "eval": str(work / "test.jsonl")}


VARIANT = "S-DPO (K=3) variant"


def lm_flags(files: dict[str, str], domain: str, seed: int, leaky: bool = False) -> list[str]:
    """What every LM training stage of the bench is given: its data, 1,000 validation rows, the seed."""
    keep = ["--keep-candidates"] if leaky else []
    return [
        "--train",
        files["train"],
        "--valid",
        files["valid"],
        "--domain",
        domain,
        "--eval-samples",
        "1000",
        "--no-progress",
        "--seed",
        str(seed),
        *keep,
    ]


def evaluate_run(run: Path, eval_file: str, domain: str, protocol: str) -> None:
    """Measure run/model on eval_file; the metrics go to run/eval-<protocol>."""
    sh(
        "evaluate",
        "--model",
        str(run / MODEL),
        "--data",
        eval_file,
        "--domain",
        domain,
        "--out",
        str(run / f"eval-{protocol}"),
        "--protocol",
        protocol,
        "--no-progress",
    )


def lm_runs(files: dict[str, str], out: Path, domain: str, args, leaky: bool, seed: int) -> dict[str, Path]:
    """SFT, DPO and S-DPO of one seed, each evaluated in both protocols; row name -> run directory."""
    common = lm_flags(files, domain, seed, leaky)
    sdpo = ["sdpo", "--negatives", "3", "--eval-every", "300"]
    stages = [
        (
            "SFT",
            "sft",
            [
                "sft",
                "--epochs",
                str(args.sft_epochs),
                "--hidden",
                str(args.hidden),
                "--layers",
                str(args.layers),
                *args.sft_args.split(),
            ],
        ),
        ("DPO (K=1)", "dpo", ["dpo", "--negatives", "1", "--eval-every", "300", *args.pref_args.split()]),
        ("S-DPO (K=3)", "sdpo", [*sdpo, *args.pref_args.split()]),
    ]
    if args.variant_args:
        stages.append((VARIANT, "sdpo-variant", [*sdpo, *args.pref_args.split(), *args.variant_args.split()]))
    runs = {}
    for row, name, cmd in stages:
        run = out / name
        model = ["--model", str(out / "sft" / MODEL)] if name != "sft" else []

        def go(run=run, cmd=cmd, model=model):
            sh(*cmd, *model, "--out", str(run), *common)
            for protocol in ("ranking", "generation"):
                evaluate_run(run, files["eval"], domain, protocol)

        if timed(run, go, args.table_only) is not None:
            runs[row] = run
    return runs


def train_baseline(name: str, files: dict[str, str], run: Path, epochs: int, *extra: str) -> None:
    """One classical baseline trained on files' train and valid, measured on its eval file, written to run."""
    sh(
        "baseline",
        name,
        "--train",
        files["train"],
        "--valid",
        files["valid"],
        "--eval",
        files["eval"],
        "--out",
        str(run),
        "--epochs",
        str(epochs),
        "--no-progress",
        *extra,
    )


def baseline_runs(files: dict[str, str], out: Path, args, seed: int, seeded_only: bool) -> dict[str, Path]:
    """Baselines of one seed (popularity and item counts have no seed: `seeded_only` skips them)."""
    extra = {"sasrec": args.sasrec_args.split(), "gru4rec": args.gru4rec_args.split()}
    runs = {}
    for name, label in (
        ("popularity", "popularity"),
        ("item-counts", "item counts"),
        ("sasrec", "SASRec"),
        ("gru4rec", "GRU4Rec"),
    ):
        if seeded_only and name in ("popularity", "item-counts"):
            continue
        run = out / name
        done = timed(
            run,
            lambda name=name, run=run: train_baseline(
                name, files, run, args.baseline_epochs, "--seed", str(seed), *extra.get(name, [])
            ),
            args.table_only,
        )
        if done is not None:
            runs[label] = run
    return runs


def dataset_runs(
    files: dict[str, str], out: Path, domain: str, args, leaky: bool = False, baselines: bool = True
) -> dict[str, list[Path]]:
    """Row name -> one run directory per seed (seed 0 first)."""
    rows: dict[str, list[Path]] = {}
    for i, seed in enumerate(args.seeds):
        where = out / f"seed{seed}"
        found = baseline_runs(files, where, args, seed, i > 0) if baselines else {}
        found.update(lm_runs(files, where, domain, args, leaky, seed))
        for name, run in found.items():
            rows.setdefault(name, []).append(run)
    return rows


def ranking_dir(run: Path) -> Path:
    return run / "eval-ranking" if (run / "eval-ranking").is_dir() else run


def summarise(rows: dict[str, list[Path]]) -> dict[str, dict]:
    """Per row: mean and std over seeds of HR@1, NDCG@5, MRR (and the generation protocol's HR@1 and
    ValidRatio for LM rows), and the mean wall time."""
    import statistics

    out = {}
    for name, runs in rows.items():
        values: dict[str, list[float]] = {}
        for run in runs:
            for k, v in metrics(ranking_dir(run)).items():
                if k in ("hr@1", "ndcg@5", "mrr"):
                    values.setdefault(k, []).append(v)
            if (run / "eval-generation").is_dir():
                gen = metrics(run / "eval-generation")
                values.setdefault("gen_hr@1", []).append(gen["hr@1"])
                values.setdefault("valid_ratio", []).append(gen["valid_ratio"])
            values.setdefault("seconds", []).append(json.loads((run / "row.json").read_text())["seconds"])
        out[name] = {
            k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in values.items()
        }
    return out


def differences(rows: dict[str, list[Path]], pairs: list[tuple[str, str]]) -> list[dict]:
    """Paired bootstrap 95% intervals of HR@1 and MRR differences over every seed of both rows, each test sample
    drawn with all its seeds' evaluations (`sdporec compare` with the seeds joined, `compare_predictions`)."""
    from sdporec.evaluation.compare import compare_predictions

    out = []
    for a, b in pairs:
        if a in rows and b in rows:
            got = compare_predictions([[str(ranking_dir(r)) for r in rows[n]] for n in (a, b)], [a, b])
            out += [
                {
                    "a": a,
                    "b": b,
                    "metric": d["metric"],
                    "diff": d["difference"],
                    "low": d["low"],
                    "high": d["high"],
                    "a_is": d["a_is"],
                }
                for d in got["differences"]
                if d["metric"] in ("hr@1", "mrr")
            ]
    return out


KEY_PAIRS = [
    ("S-DPO (K=3)", "DPO (K=1)"),
    ("S-DPO (K=3)", "SFT"),
    ("DPO (K=1)", "SFT"),
    ("S-DPO (K=3)", "SASRec"),
    ("S-DPO (K=3)", "GRU4Rec"),
    ("SFT", "SASRec"),
    (VARIANT, "S-DPO (K=3)"),
    (VARIANT, "SFT"),
    (VARIANT, "SASRec"),
    (VARIANT, "GRU4Rec"),
]


def table(title: str, rows: dict[str, dict], diffs: list[dict] | None = None) -> str:
    def cell(r: dict, k: str) -> str:
        mean, std, n = r[k]
        return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"

    lines = [
        f"**{title}**",
        "",
        "| model | seeds | HR@1 | NDCG@5 | MRR | HR@1 (generation) | ValidRatio | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        gen = f"{cell(r, 'gen_hr@1')} | {cell(r, 'valid_ratio')}" if "gen_hr@1" in r else "– | –"
        lines.append(
            f"| {name} | {r['hr@1'][2]} | {cell(r, 'hr@1')} | {cell(r, 'ndcg@5')} | {cell(r, 'mrr')} | {gen} "
            f"| {r['seconds'][0]:.0f} s |"
        )
    if diffs:
        lines += [
            "",
            "| a − b | metric | difference | 95% interval (paired bootstrap, seeds averaged) | a is |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {d['a']} − {d['b']} | {d['metric']} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] "
            f"| {d['a_is']} |"
            for d in diffs
        ]
    return "\n".join(lines)


def run_seeds_side_by_side(args, out: Path) -> None:
    """The seeds split over `args.jobs` processes of this script, each with its share of the cores and its log in
    out/seeds-<seeds>.log; stops if one of them fails."""
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    chunks = [args.seeds[i :: args.jobs] for i in range(args.jobs) if args.seeds[i :: args.jobs]]
    procs = []
    for chunk in chunks:
        seeds = [str(s) for s in chunk]
        log = out / f"seeds-{'-'.join(seeds)}.log"
        cmd = [sys.executable, __file__, *sys.argv[1:], "--jobs", "1", "--seeds", *seeds]  # the last flag wins
        print(f"$ OMP_NUM_THREADS={threads} {' '.join(cmd[1:])} > {log}", flush=True)
        with open(log, "w") as sink:
            procs.append(
                (
                    log,
                    subprocess.Popen(
                        cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": threads}
                    ),
                )
            )
    failed = [str(log) for log, proc in procs if proc.wait() != 0]
    if failed:
        sys.exit(f"seed processes failed, see {', '.join(failed)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "quality"))
    ap.add_argument("--only", choices=("lastfm", "movielens", "leaky"), default=None)
    ap.add_argument("--sft-epochs", type=int, default=3)
    ap.add_argument("--baseline-epochs", type=int, default=30, help="most epochs of SASRec and GRU4Rec")
    ap.add_argument(
        "--sasrec-args",
        default="",
        help="extra flags for SASRec, e.g. the tuned setting '--hidden 128 --layers 3 --dropout 0.5' of bench/sweep.py",
    )
    ap.add_argument("--gru4rec-args", default="", help="extra flags for GRU4Rec")
    ap.add_argument("--hidden", type=int, default=128, help="built-in backbone width for the LM rows")
    ap.add_argument("--layers", type=int, default=2, help="built-in backbone depth for the LM rows")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every seeded row")
    ap.add_argument("--sft-args", default="", help="extra flags for the SFT rows, e.g. '--history-weight 1'")
    ap.add_argument("--pref-args", default="", help="extra flags for the DPO and S-DPO rows")
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="only the tables of the rows already finished (each row over the seeds it has)",
    )
    ap.add_argument(
        "--variant-args",
        default="",
        help="adds a row: S-DPO (K=3) with these extra flags, "
        "e.g. '--sft-weight 1' (named 'S-DPO (K=3) variant' in the tables)",
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="processes running the seeds side by side (with --only lastfm or movielens)"
    )
    args = ap.parse_args()
    out, started, measured = Path(args.out), time.time(), not args.table_only
    for need in (SHARED / "lastfm" / "resampled" / "lastfm-val.json", SHARED / "ml-100k" / "u.data"):
        if not need.is_file():
            sys.exit(f"missing {need} (see ../shared/data/README.md)")
    if args.jobs > 1 and not args.table_only:
        if args.only not in ("lastfm", "movielens"):
            sys.exit("--jobs runs one data set's seeds side by side: name it with --only lastfm or --only movielens")
        prepare = lastfm_data if args.only == "lastfm" else movielens_data
        prepare(out / args.only / "data", leaky=False)  # once, before the processes that read it
        run_seeds_side_by_side(args, out)
        args.table_only = True
    tables = []
    if args.only in (None, "lastfm"):
        files = lastfm_data(out / "lastfm" / "data", leaky=False)
        rows = dataset_runs(files, out / "lastfm", "music", args)
        tables.append(
            table(
                "LastFM, resampled/lastfm-val.json (2,767 samples, negatives drawn per sample)",
                summarise(rows),
                differences(rows, KEY_PAIRS),
            )
        )
    if args.only in (None, "movielens"):
        files = movielens_data(out / "movielens" / "data", leaky=False)
        rows = dataset_runs(files, out / "movielens", "movies", args)
        tables.append(
            table(
                "MovieLens-100K test (10,497 samples, negatives drawn per sample)",
                summarise(rows),
                differences(rows, KEY_PAIRS),
            )
        )
    if args.only in (None, "leaky"):
        args.sft_epochs, args.seeds = 1, args.seeds[:1]
        leaky = {}
        files = lastfm_data(out / "leaky-lastfm" / "data", leaky=True)
        leaky.update(
            {f"LastFM {k}": v for k, v in dataset_runs(files, out / "leaky-lastfm", "music", args, True, False).items()}
        )
        files = movielens_data(out / "leaky-movielens" / "data", leaky=True)
        leaky.update(
            {
                f"MovieLens {k}": v
                for k, v in dataset_runs(files, out / "leaky-movielens", "movies", args, True, False).items()
            }
        )
        tables.append(
            table(
                "LEAKY: the paper's target-seeded candidate lists (comparison with papers only; "
                "1 SFT epoch, training on the file's own lists)",
                summarise(leaky),
            )
        )
    text = "\n\n".join(tables)
    (out / "tables.md").write_text(text + "\n")
    print("\n" + text)
    if measured:
        print(f"\nthis run: {time.time() - started:.0f} s wall, {args.jobs} process(es) for the seeds")


if __name__ == "__main__":
    main()
