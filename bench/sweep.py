"""Tuning a model on LastFM with one grid for all: size, layers and dropout, chosen on the held-out
validation rows (the last 5% of training, as in bench/quality.py), then measured (ranking protocol) on
resampled/lastfm-val.json. The same grid for SASRec, GRU4Rec and the LM's SFT (the built-in backbone,
`sdporec sft --dropout`) gives them the same tuning budget; the LM also runs its untuned default (hidden 128,
2 layers, no dropout) as the row to beat. Finished runs are kept, so an interrupted sweep resumes; the table
goes to <out>/table.md after every row.

    .venv/bin/python bench/sweep.py [--model sasrec|gru4rec|sft] [--data runs/quality/lastfm/data]
        [--out runs/<model>-sweep] [--epochs N (baselines: at most 20 with early stopping; sft: 10)]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quality import metrics, sh, timed

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "lastfm" / "resampled" / "lastfm-val.json"
GRID = [(64, 2, 0.2), (128, 2, 0.2), (64, 1, 0.2), (64, 2, 0.5), (128, 2, 0.5), (128, 3, 0.5)]
LM_DEFAULT = (128, 2, 0.0)
HEADER = ["| hidden | layers | dropout | validation HR@1 | LastFM HR@1 | MRR | epochs | wall time |",
          "|---|---|---|---|---|---|---|---|"]


def run_baseline(model: str, data: Path, run: Path, hidden: int, layers: int, dropout: float, epochs: int) -> dict:
    if not (run / "metrics.json").is_file():
        sh("baseline", model, "--train", str(data / "train.jsonl"), "--valid", str(data / "valid.jsonl"),
           "--eval", str(EVAL), "--out", str(run), "--hidden", str(hidden), "--layers", str(layers),
           "--dropout", str(dropout), "--epochs", str(epochs), "--no-progress")
    m = metrics(run)
    return {"valid": m["best_valid_hr@1"], "hr@1": m["hr@1"], "mrr": m["mrr"], "epochs": m["epochs_run"],
            "seconds": m["seconds"]}


def run_sft(data: Path, run: Path, hidden: int, layers: int, dropout: float, epochs: int) -> dict:
    """SFT with bench/quality.py's settings (1,000 validation rows, seed 0), then its best checkpoint ranked."""
    def go() -> None:
        sh("sft", "--train", str(data / "train.jsonl"), "--valid", str(data / "valid.jsonl"), "--domain", "music",
           "--eval-samples", "1000", "--seed", "0", "--epochs", str(epochs), "--hidden", str(hidden),
           "--layers", str(layers), "--dropout", str(dropout), "--out", str(run), "--no-progress")
        sh("evaluate", "--model", str(run / "model"), "--data", str(EVAL), "--domain", "music",
           "--out", str(run / "eval-ranking"), "--protocol", "ranking", "--no-progress")

    seconds = timed(run, go)["seconds"]
    m = metrics(run / "eval-ranking")
    summary = json.loads((run / "summary.json").read_text())
    valid = [json.loads(x) for x in (run / "eval_log.jsonl").read_text().splitlines()]
    kept = [r for r in valid if r["best"]][-1]   # the checkpoint the trainer kept
    return {"valid": summary["best_valid_hr@1"], "hr@1": m["hr@1"], "mrr": m["mrr"],
            "epochs": f"{kept['epoch']:g} of {len(valid)}", "seconds": seconds}


def table(model: str, rows: list[tuple[tuple, dict]]) -> str:
    best = max(rows, key=lambda r: r[1]["valid"])
    lines = list(HEADER)
    for (hidden, layers, dropout), m in rows:
        mark = " (chosen)" if m is best[1] else ""
        lines.append(f"| {hidden} | {layers} | {dropout} | {m['valid']:.4f}{mark} | {m['hr@1']:.4f} | {m['mrr']:.4f} "
                     f"| {m['epochs']} | {m['seconds']:.0f} s |")
    return f"{model}, LastFM\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("sasrec", "gru4rec", "sft"), default="sasrec")
    ap.add_argument("--data", default=str(ROOT / "runs" / "quality" / "lastfm" / "data"),
                    help="train.jsonl and valid.jsonl as bench/quality.py writes them")
    ap.add_argument("--out", default=None, help="default: runs/<model>-sweep")
    ap.add_argument("--epochs", type=int, default=None, help="baselines: at most this many (default 20); sft: "
                    "exactly this many (default 10, bench/quality.py's LastFM setting)")
    args = ap.parse_args()
    data = Path(args.data)
    out = Path(args.out or ROOT / "runs" / f"{args.model}-sweep")
    if not (data / "valid.jsonl").is_file():
        sys.exit(f"--data {data}: no valid.jsonl there; run bench/quality.py --only lastfm first (it writes them)")
    grid = [LM_DEFAULT, *GRID] if args.model == "sft" else GRID
    rows = []
    for size in grid:
        run = out / "h{}-l{}-d{}".format(*size)
        if args.model == "sft":
            rows.append((size, run_sft(data, run, *size, args.epochs or 10)))
        else:
            rows.append((size, run_baseline(args.model, data, run, *size, args.epochs or 20)))
        (out / "table.md").write_text(table(args.model, rows) + "\n")
    print(table(args.model, rows))


if __name__ == "__main__":
    main()
