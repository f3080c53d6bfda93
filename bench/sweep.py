"""Tuning a model on LastFM with one grid for all: size, layers and dropout, chosen on the held-out
validation rows (the last 5% of training, as in bench/quality.py), then measured (ranking protocol) on
resampled/lastfm-val.json. The same grid for SASRec, GRU4Rec and the LM's SFT (the built-in backbone,
`sdporec sft --dropout`) gives them the same tuning budget; the LM also runs its untuned default (hidden 128,
2 layers, no dropout) as the row to beat. `--sizes` runs other rows instead of the grid (the LM's larger
backbones), `--lr` another learning rate. Finished runs are kept, so an interrupted sweep resumes; after every
row <out>/table.md is rewritten with every finished run in <out>, this sweep's and earlier ones'.

    .venv/bin/python bench/sweep.py [--model sasrec|gru4rec|sft] [--data runs/quality/lastfm/data]
        [--out runs/<model>-sweep] [--epochs N (baselines: at most 20 with early stopping; sft: 10)]
        [--sizes HIDDENxLAYERSxDROPOUT,... (e.g. 256x2x0,128x4x0)] [--lr LR (default: the command's)]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from quality import evaluate_run, lm_flags, metrics, sh, timed, train_baseline

from sdporec.runs import EVAL_LOG, METRICS, SUMMARY, read_log, read_summary

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "lastfm" / "resampled" / "lastfm-val.json"
GRID = [(64, 2, 0.2), (128, 2, 0.2), (64, 1, 0.2), (64, 2, 0.5), (128, 2, 0.5), (128, 3, 0.5)]
LM_DEFAULT = (128, 2, 0.0)
HEADER = [
    "| hidden | layers | dropout | lr | validation HR@1 | LastFM HR@1 | MRR | epochs | wall time |",
    "|---|---|---|---|---|---|---|---|---|",
]
RUN_NAME = re.compile(r"h(\d+)-l(\d+)-d([0-9.]+)(?:-lr(.+))?")


def run_name(hidden: int, layers: int, dropout: float, lr: float | None) -> str:
    """A row's folder; rows at the command's default learning rate have no lr part."""
    return f"h{hidden}-l{layers}-d{dropout}" + (f"-lr{lr:g}" if lr is not None else "")


def parse_sizes(text: str) -> list[tuple[int, int, float]]:
    try:
        return [(int(h), int(n), float(d)) for h, n, d in (part.split("x") for part in text.split(","))]
    except ValueError:
        expected = "expected HIDDENxLAYERSxDROPOUT[,...], e.g. 256x2x0,128x4x0"
        raise argparse.ArgumentTypeError(f"{text!r}: {expected}") from None


def lr_flags(lr: float | None) -> list[str]:
    return ["--lr", f"{lr:g}"] if lr is not None else []


def sweep_files(data: Path) -> dict[str, str]:
    """train / valid as bench/quality.py writes them under `data`, and the file every row is measured on."""
    return {"train": str(data / "train.jsonl"), "valid": str(data / "valid.jsonl"), "eval": str(EVAL)}


def run_baseline(
    model: str, data: Path, run: Path, hidden: int, layers: int, dropout: float, epochs: int, lr: float | None = None
) -> None:
    if not (run / METRICS).is_file():
        train_baseline(
            model,
            sweep_files(data),
            run,
            epochs,
            "--hidden",
            str(hidden),
            "--layers",
            str(layers),
            "--dropout",
            str(dropout),
            *lr_flags(lr),
        )


def baseline_row(run: Path) -> dict | None:
    if not (run / METRICS).is_file():
        return None
    m = metrics(run)
    return {
        "valid": m["best_valid_hr@1"],
        "hr@1": m["hr@1"],
        "mrr": m["mrr"],
        "epochs": m["epochs_run"],
        "seconds": m["seconds"],
    }


def run_sft(
    data: Path, run: Path, hidden: int, layers: int, dropout: float, epochs: int, lr: float | None = None
) -> None:
    """SFT with bench/quality.py's settings (1,000 validation rows, seed 0), then its best checkpoint ranked."""
    files = sweep_files(data)

    def go() -> None:
        sh(
            "sft",
            "--epochs",
            str(epochs),
            "--hidden",
            str(hidden),
            "--layers",
            str(layers),
            "--dropout",
            str(dropout),
            "--out",
            str(run),
            *lr_flags(lr),
            *lm_flags(files, "music", seed=0),
        )
        evaluate_run(run, files["eval"], "music", "ranking")

    timed(run, go)


def sft_row(run: Path) -> dict | None:
    if not (run / "row.json").is_file():
        return None
    seconds = json.loads((run / "row.json").read_text())["seconds"]
    m = metrics(run / "eval-ranking")
    summary = read_summary(run / SUMMARY)
    valid = read_log(run / EVAL_LOG)
    kept = [r for r in valid if r["best"]][-1]  # the checkpoint the trainer kept
    return {
        "valid": summary["best_valid_hr@1"],
        "hr@1": m["hr@1"],
        "mrr": m["mrr"],
        "epochs": f"{kept['epoch']:g} of {len(valid)}",
        "seconds": seconds,
    }


def finished_rows(model: str, out: Path) -> list[tuple[tuple, dict]]:
    """Every finished run in `out`, keyed (hidden, layers, dropout, lr or "default"), in that order."""
    rows = []
    for run in out.iterdir() if out.is_dir() else []:
        name = RUN_NAME.fullmatch(run.name)
        row = (sft_row if model == "sft" else baseline_row)(run) if name else None
        if row is not None:
            hidden, layers, dropout, lr = name.groups()
            rows.append(((int(hidden), int(layers), float(dropout), lr or "default"), row))
    return sorted(rows, key=lambda r: (r[0][:3], r[0][3] != "default", r[0][3]))


def table(model: str, rows: list[tuple[tuple, dict]]) -> str:
    best = max(rows, key=lambda r: r[1]["valid"])
    lines = list(HEADER)
    for (hidden, layers, dropout, lr), m in rows:
        mark = " (chosen)" if m is best[1] else ""
        lines.append(
            f"| {hidden} | {layers} | {dropout} | {lr} | {m['valid']:.4f}{mark} | {m['hr@1']:.4f} "
            f"| {m['mrr']:.4f} | {m['epochs']} | {m['seconds']:.0f} s |"
        )
    return f"{model}, LastFM\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("sasrec", "gru4rec", "sft"), default="sasrec")
    ap.add_argument(
        "--data",
        default=str(ROOT / "runs" / "quality" / "lastfm" / "data"),
        help="train.jsonl and valid.jsonl as bench/quality.py writes them",
    )
    ap.add_argument("--out", default=None, help="default: runs/<model>-sweep")
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="baselines: at most this many (default 20); sft: "
        "exactly this many (default 10, bench/quality.py's LastFM setting)",
    )
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="HIDDENxLAYERSxDROPOUT,... to run instead of the grid, e.g. 256x2x0,128x4x0",
    )
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the command's own)")
    args = ap.parse_args()
    data = Path(args.data)
    out = Path(args.out or ROOT / "runs" / f"{args.model}-sweep")
    if not (data / "valid.jsonl").is_file():
        sys.exit(f"--data {data}: no valid.jsonl there; run bench/quality.py --only lastfm first (it writes them)")
    grid = args.sizes or ([LM_DEFAULT, *GRID] if args.model == "sft" else GRID)
    for size in grid:
        run = out / run_name(*size, args.lr)
        if args.model == "sft":
            run_sft(data, run, *size, args.epochs or 10, args.lr)
        else:
            run_baseline(args.model, data, run, *size, args.epochs or 20, args.lr)
        text = table(args.model, finished_rows(args.model, out))
        (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
