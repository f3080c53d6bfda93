"""Little data, where a pretrained LM's world knowledge should pay: every row trained on the same small
seeded random subset of training samples and measured on the same seeded random subset of held-out samples
(the same candidate lists for every row).

Data sets (from ../shared/data, never copied into the repository):
- movielens: `sdporec prepare movielens-100k` (users 8:1:1, negatives drawn per sample); held out: test.
- lastfm: resampled/lastfm-train.json; held out: resampled/lastfm-val.json.
Checkpoints are chosen on a further seeded subset of validation samples (MovieLens: its valid split;
LastFM: training rows outside the training subset).

Rows: popularity, item counts, item-kNN (co-occurrence vectors of the subset, no training), SASRec and GRU4Rec
(each trained on the subset), the built-in backbone (SFT, then S-DPO K = 3), SmolLM2-135M-Instruct zero-shot,
SmolLM2 + LoRA SFT, then DPO (K = 1) and S-DPO (K = 3) from that SFT checkpoint, and the same with item tokens
(`hybrid-*`: `sft --item-tokens`, `--item-text` as given here; LoRA with the new rows from the title's token
mean, its hidden state or the mean plus co-occurrence vectors (`--item-init cooc`), and all weights).
Ranking (HR@1, NDCG@5, MRR; SmolLM2 zero-shot and SFT also with per-token mean
scores), the paper's generation protocol for LM rows (HR@1, ValidRatio), wall time (training and
evaluation), ranking samples/s and the row's peak resident memory. Finished rows are kept (row.json), so
an interrupted run resumes, and `<out>/tables.md` lists every finished row of each subset, from earlier calls too.

    .venv/bin/python bench/lowdata.py                                   # the full grid (many hours on 2 cores)
    .venv/bin/python bench/lowdata.py --data movielens --train-sizes 128 --eval-samples 200   # what ran here
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sdporec.runs import MODEL, read_evaluation_metrics

# Commands whose --out a rerun of this bench replaces (they refuse to without --overwrite).
REPLACEABLE = ("prepare", "sft", "dpo", "sdpo", "evaluate", "baseline", "export", "init-model", "pipeline")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# Runs the CLI and reports the process's peak resident memory (KiB) on its last line.
MEASURED = (
    "import resource, sys; from sdporec.cli import main; code = main(sys.argv[1:]); "
    "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)
BASELINES = ("popularity", "item-counts", "item-knn", "sasrec", "gru4rec")
LM_ROWS = (
    "builtin-sft",
    "builtin-sdpo",
    "smollm2-zero",
    "smollm2-sft",
    "smollm2-dpo",
    "smollm2-sdpo",
    "hybrid-sft",
    "hybrid-hidden-sft",
    "hybrid-cooc-sft",
    "hybrid-dpo",
    "hybrid-sdpo",
    "hybrid-full-sft",
)
# SmolLM2 with item tokens (`sft --item-tokens`): LoRA with the rows started from the title's token mean, or
# from its hidden state, or from the mean plus the training data's co-occurrence vectors; DPO / S-DPO from the
# SFT row `--hybrid-pref-from` names (the mean-initialised one by default); all weights trained (full).
HYBRID_SFT = {
    "hybrid-sft": ["--lora"],
    "hybrid-hidden-sft": ["--lora", "--item-init", "hidden"],
    "hybrid-cooc-sft": ["--lora", "--item-init", "cooc"],
    "hybrid-full-sft": [],
}
DOMAIN = {"movielens": "movies", "lastfm": "music"}
# SASRec and GRU4Rec are tuned on each subset's validation samples over bench/sweep.py's grid (hidden, layers,
# dropout) at two learning rates and a batch that gives small subsets more than a few steps an epoch.
TUNE_GRID = [
    (h, n, d, lr)
    for h, n, d in ((64, 2, 0.2), (128, 2, 0.2), (64, 1, 0.2), (64, 2, 0.5), (128, 2, 0.5), (128, 3, 0.5))
    for lr in (1e-3, 3e-3)
]


class Row:
    """One row's commands, timed together; the peak memory is the largest of its processes'."""

    def __init__(self, out: Path, log: Path):
        self.out, self.log, self.peak_kib = out, log, 0

    def sdporec(self, *args: str) -> None:
        args = (*args, "--overwrite") if args[0] in REPLACEABLE else args  # a rerun replaces its rows
        with open(self.log, "a") as log:
            log.write("$ sdporec " + " ".join(args) + "\n")
            log.flush()
            done = subprocess.run(
                [sys.executable, "-c", MEASURED, *args], stdout=subprocess.PIPE, stderr=log, text=True
            )
            log.write(done.stdout)
        if done.returncode != 0:
            sys.exit(f"failed: sdporec {' '.join(args)} (see {self.log})")
        self.peak_kib = max(self.peak_kib, int(done.stdout.rsplit("PEAK", 1)[1].split()[0]))


def subsets(name: str, work: Path, size: int, n_eval: int, n_valid: int, seed: int) -> dict[str, str]:
    """Seeded random train / valid / eval subsets, and every title (the built-in vocabulary needs them all)."""
    from sdporec.data.samples import read_samples, write_samples

    work.mkdir(parents=True, exist_ok=True)
    if (work / "eval.jsonl").is_file():
        return {k: str(work / f"{k}.jsonl") for k in ("train", "valid", "eval")} | {"titles": str(work / "titles.txt")}
    if name == "movielens":
        full = work.parent / "prepared"
        if not (full / "test.jsonl").is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sdporec",
                    "prepare",
                    "movielens-100k",
                    "--raw",
                    str(SHARED / "ml-100k"),
                    "--out",
                    str(full),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        train, valid, held = (read_samples(full / f"{s}.jsonl", s) for s in ("train", "valid", "test"))
    else:
        rows = read_samples(SHARED / "lastfm" / "resampled" / "lastfm-train.json", "train")
        held = read_samples(SHARED / "lastfm" / "resampled" / "lastfm-val.json", "eval")
        order = random.Random(f"{seed}:lastfm-valid").sample(range(len(rows)), len(rows))
        valid = [rows[i] for i in order[:n_valid]]
        train = [rows[i] for i in order[n_valid:]]
    rng = random.Random(f"{seed}:{name}")
    picked = {
        "train": rng.sample(train, size),
        "valid": rng.sample(valid, min(n_valid, len(valid))),
        "eval": random.Random(f"{seed}:{name}:eval").sample(held, n_eval),
    }
    for split, samples in picked.items():
        write_samples(work / f"{split}.jsonl", samples)
    titles = sorted({t for s in train + valid + held for t in (*s.history, *s.candidates)})
    (work / "titles.txt").write_text("\n".join(titles) + "\n", encoding="utf-8")
    return {k: str(work / f"{k}.jsonl") for k in picked} | {"titles": str(work / "titles.txt")}


def evaluate(row: Row, model: str, files: dict, domain: str, args, scores=("sum",), generation: bool = True) -> dict:
    got = {}
    for protocol, score in [("ranking", s) for s in scores] + ([("generation", "sum")] if generation else []):
        name = f"eval-{protocol}" + ("" if score == "sum" else f"-{score}")
        row.sdporec(
            "evaluate",
            "--model",
            model,
            "--data",
            files["eval"],
            "--domain",
            domain,
            "--out",
            str(row.out / name),
            "--protocol",
            protocol,
            "--score",
            score,
            "--batch-size",
            str(args.eval_batch),
            "--no-progress",
        )
        got[name] = read_evaluation_metrics(row.out / name)
    return got


def run_lm_row(kind: str, row: Row, files: dict, out: Path, domain: str, args) -> dict:
    common = [
        "--train",
        files["train"],
        "--valid",
        files["valid"],
        "--domain",
        domain,
        "--no-progress",
        "--eval-samples",
        str(args.valid_samples),
        "--seed",
        str(args.seed),
    ]  # seed 0: the commands' default
    smol = ["--batch-size", str(args.lm_batch)]
    if kind == "builtin-sft":
        row.sdporec(
            "sft",
            "--out",
            str(row.out),
            "--titles",
            files["titles"],
            "--epochs",
            str(args.builtin_epochs),
            *common,
            *shlex.split(args.builtin_sft_args),
        )
    elif kind == "builtin-sdpo":
        row.sdporec(
            "sdpo",
            "--model",
            str(out / "builtin-sft" / MODEL),
            "--out",
            str(row.out),
            "--epochs",
            str(args.pref_epochs),
            *common,
        )
    elif kind == "smollm2-sft":
        row.sdporec(
            "sft",
            "--model",
            "smollm2-135m",
            "--lora",
            "--out",
            str(row.out),
            "--epochs",
            str(args.lm_epochs),
            *smol,
            *common,
        )
    elif kind in HYBRID_SFT:
        row.sdporec(
            "sft",
            "--model",
            "smollm2-135m",
            "--item-tokens",
            "--item-text",
            args.item_text,
            "--titles",
            files["titles"],
            *HYBRID_SFT[kind],
            "--out",
            str(row.out),
            "--epochs",
            str(args.lm_epochs),
            *smol,
            *common,
            *shlex.split(args.hybrid_sft_args),
        )
    elif kind in ("hybrid-dpo", "hybrid-sdpo"):
        row.sdporec(
            kind.split("-")[1],
            "--model",
            str(out / args.hybrid_pref_from / MODEL),
            "--negatives",
            "1" if kind == "hybrid-dpo" else "3",
            "--out",
            str(row.out),
            "--epochs",
            str(args.pref_epochs),
            *smol,
            *common,
            *shlex.split(args.hybrid_pref_args),
        )
    elif kind in ("smollm2-dpo", "smollm2-sdpo"):
        k = "1" if kind == "smollm2-dpo" else "3"
        row.sdporec(
            kind.split("-")[1],
            "--model",
            str(out / "smollm2-sft" / MODEL),
            "--negatives",
            k,
            "--out",
            str(row.out),
            "--epochs",
            str(args.pref_epochs),
            *smol,
            *common,
        )
    model = "smollm2-135m" if kind == "smollm2-zero" else str(row.out / MODEL)
    scores = ("sum", "mean") if kind in ("smollm2-zero", "smollm2-sft") and args.mean_scores else ("sum",)
    return evaluate(row, model, files, domain, args, scores, kind not in args.skip_generation)


def tune_baseline(kind: str, row: Row, files: dict, args) -> dict:
    """Every TUNE_GRID setting trained with early stopping; the one best on validation HR@1 is the row
    (its run copied to eval-ranking, the grid's validation scores kept in tuning.json)."""
    tried = {}
    for hidden, layers, dropout, lr in TUNE_GRID:
        name = f"h{hidden}-l{layers}-d{dropout}-lr{lr:g}"
        row.sdporec(
            "baseline",
            kind,
            "--train",
            files["train"],
            "--valid",
            files["valid"],
            "--eval",
            files["eval"],
            "--out",
            str(row.out / "grid" / name),
            "--epochs",
            str(args.baseline_epochs),
            "--hidden",
            str(hidden),
            "--layers",
            str(layers),
            "--dropout",
            str(dropout),
            "--lr",
            str(lr),
            "--batch-size",
            "64",
            "--seed",
            str(args.seed),
            "--no-progress",
        )
        tried[name] = read_evaluation_metrics(row.out / "grid" / name)
    best = max(tried, key=lambda n: tried[n]["best_valid_hr@1"])  # first of equals: the grid's order
    shutil.copytree(row.out / "grid" / best, row.out / "eval-ranking", dirs_exist_ok=True)
    (row.out / "tuning.json").write_text(
        json.dumps({"chosen": best, "valid_hr@1": {n: m["best_valid_hr@1"] for n, m in tried.items()}}, indent=1) + "\n"
    )
    return {**tried[best], "chosen": best}


def finished_row(out: Path, kind: str) -> dict | None:
    """The row's row.json, written when it finished (None: not finished)."""
    done = out / kind / "row.json"
    return json.loads(done.read_text()) if done.is_file() else None


def run_row(kind: str, files: dict, out: Path, domain: str, args) -> dict:
    if (finished := finished_row(out, kind)) is not None:
        return finished
    row = Row(out / kind, out / f"{kind}.log")
    row.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if kind in ("sasrec", "gru4rec") and args.tune:
        got = {"eval-ranking": tune_baseline(kind, row, files, args)}
    elif kind in BASELINES:
        row.sdporec(
            "baseline",
            kind,
            "--train",
            files["train"],
            "--valid",
            files["valid"],
            "--eval",
            files["eval"],
            "--out",
            str(row.out / "eval-ranking"),
            "--epochs",
            str(args.baseline_epochs),
            "--no-progress",
        )
        got = {"eval-ranking": read_evaluation_metrics(row.out / "eval-ranking")}
    else:
        got = run_lm_row(kind, row, files, out, domain, args)
    rank = got["eval-ranking"]
    result = {
        **{k: rank[k] for k in ("hr@1", "ndcg@5", "mrr", "n")},
        "seconds": round(time.time() - started, 1),
        "peak_rss_gib": round(row.peak_kib / 2**20, 2),
    }
    if kind in LM_ROWS:  # the baselines' evaluation is not timed apart from their training
        result["ranking_samples_per_s"] = round(rank["n"] / max(rank["seconds"], 1e-9), 3)
    if "chosen" in rank:
        result["chosen"] = rank["chosen"]
    if "eval-ranking-mean" in got:
        result["mean_hr@1"] = got["eval-ranking-mean"]["hr@1"]
    if "eval-generation" in got:
        result["gen_hr@1"], result["valid_ratio"] = (
            got["eval-generation"]["hr@1"],
            got["eval-generation"]["valid_ratio"],
        )
    (out / kind / "row.json").write_text(json.dumps(result) + "\n")
    print(f"{out.name} {kind}: {json.dumps(result)}", flush=True)
    return result


def finished_rows(out: Path) -> dict[str, dict]:
    """Every row finished under `out`, by earlier calls too, in the bench's row order (one table per subset)."""
    rows = {kind: finished_row(out, kind) for kind in BASELINES + LM_ROWS}
    return {kind: row for kind, row in rows.items() if row is not None}


def table(title: str, rows: dict[str, dict]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| row | HR@1 | NDCG@5 | MRR | HR@1, mean score | HR@1 (generation) | ValidRatio | "
        "wall time | ranking samples/s | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r, k, f=".4f"):
        return "–" if k not in r else format(r[k], f)

    for name, r in rows.items():
        r = r if name in LM_ROWS else {k: v for k, v in r.items() if k != "ranking_samples_per_s"}
        lines.append(
            f"| {name} | {cell(r, 'hr@1')} | {cell(r, 'ndcg@5')} | {cell(r, 'mrr')} "
            f"| {cell(r, 'mean_hr@1')} | "
            f"{cell(r, 'gen_hr@1')} | {cell(r, 'valid_ratio')} | {r['seconds']:.0f} s | "
            f"{cell(r, 'ranking_samples_per_s', '.2f')} | {r['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "lowdata"))
    ap.add_argument("--data", nargs="+", default=["movielens", "lastfm"], choices=("movielens", "lastfm"))
    ap.add_argument("--train-sizes", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--eval-samples", type=int, default=500, help="held-out samples every row is measured on")
    ap.add_argument("--valid-samples", type=int, default=64, help="validation samples for checkpoint choice")
    ap.add_argument(
        "--rows",
        nargs="+",
        default=[r for r in BASELINES + LM_ROWS if r != "hybrid-full-sft"],
        choices=BASELINES + LM_ROWS,
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lm-epochs", type=int, default=2, help="SmolLM2 LoRA SFT epochs")
    ap.add_argument("--lm-batch", type=int, default=8, help="SmolLM2 micro-batch")
    ap.add_argument("--builtin-epochs", type=int, default=10, help="built-in backbone SFT epochs")
    ap.add_argument("--pref-epochs", type=int, default=1, help="DPO / S-DPO epochs")
    ap.add_argument("--baseline-epochs", type=int, default=30)
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument(
        "--skip-generation",
        nargs="*",
        default=[],
        choices=LM_ROWS,
        metavar="ROW",
        help="LM rows measured by ranking only (generation of text answers is the slowest evaluation)",
    )
    ap.add_argument(
        "--mean-scores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also rank SmolLM2 zero-shot and text SFT by per-token mean scores (a second ranking pass)",
    )
    ap.add_argument("--item-text", default="title", choices=("title", "token"), help="hybrid rows' prompts")
    ap.add_argument(
        "--hybrid-sft-args",
        default="",
        help="more flags for the hybrid SFT rows (e.g. '--history-weight 1 --history-in prompt')",
    )
    ap.add_argument("--builtin-sft-args", default="", help="more flags for the built-in backbone's SFT row")
    ap.add_argument(
        "--hybrid-pref-from",
        default="hybrid-sft",
        choices=tuple(HYBRID_SFT),
        help="the hybrid SFT row the hybrid DPO / S-DPO rows start from",
    )
    ap.add_argument("--hybrid-pref-args", default="", help="more flags for the hybrid DPO / S-DPO rows")
    ap.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SASRec and GRU4Rec tuned on the subset's validation samples (TUNE_GRID)",
    )
    args = ap.parse_args()
    tables = []
    for name in args.data:
        for size in args.train_sizes:
            out = Path(args.out) / name / f"train{size}"
            files = subsets(
                name, Path(args.out) / name / f"data{size}", size, args.eval_samples, args.valid_samples, args.seed
            )
            for kind in args.rows:
                run_row(kind, files, out, DOMAIN[name], args)
            tables.append(
                table(
                    f"{name}: {size} training samples, {args.eval_samples} held-out samples (seed {args.seed})",
                    finished_rows(out),
                )
            )
    text = "\n\n".join(tables)
    Path(args.out, "tables.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
