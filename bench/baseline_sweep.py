"""Tuning a classical baseline (SASRec or GRU4Rec) on LastFM: size, layers and dropout, chosen on the
held-out validation rows (the last 5% of training, as in bench/quality.py), then measured on
resampled/lastfm-val.json. Finished runs are kept, so an interrupted sweep resumes; the table goes to
<out>/table.md. The same grid for both models gives them the same tuning budget.

    .venv/bin/python bench/baseline_sweep.py [--model sasrec|gru4rec] [--data runs/quality/lastfm/data]
        [--out runs/<model>-sweep] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "lastfm" / "resampled" / "lastfm-val.json"
GRID = [(64, 2, 0.2), (128, 2, 0.2), (64, 1, 0.2), (64, 2, 0.5), (128, 2, 0.5), (128, 3, 0.5)]


def run_one(model: str, data: Path, run: Path, hidden: int, layers: int, dropout: float, epochs: int) -> dict:
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "sdporec", "baseline", model, "--train", str(data / "train.jsonl"),
                        "--valid", str(data / "valid.jsonl"), "--eval", str(EVAL), "--out", str(run),
                        "--hidden", str(hidden), "--layers", str(layers), "--dropout", str(dropout),
                        "--epochs", str(epochs), "--no-progress", "--overwrite"],
                       check=True, stdout=subprocess.DEVNULL)
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("sasrec", "gru4rec"), default="sasrec")
    ap.add_argument("--data", default=str(ROOT / "runs" / "quality" / "lastfm" / "data"),
                    help="train.jsonl and valid.jsonl as bench/quality.py writes them")
    ap.add_argument("--out", default=None, help="default: runs/<model>-sweep")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    data = Path(args.data)
    out = Path(args.out or ROOT / "runs" / f"{args.model}-sweep")
    if not (data / "valid.jsonl").is_file():
        sys.exit(f"--data {data}: no valid.jsonl there; run bench/quality.py --only lastfm first (it writes them)")
    rows = []
    for hidden, layers, dropout in GRID:
        m = run_one(args.model, data, out / f"h{hidden}-l{layers}-d{dropout}", hidden, layers, dropout, args.epochs)
        rows.append((hidden, layers, dropout, m["best_valid_hr@1"], m["hr@1"], m["mrr"], m["epochs_run"], m["seconds"]))
    best = max(rows, key=lambda r: r[3])
    lines = ["| hidden | layers | dropout | validation HR@1 | LastFM HR@1 | MRR | epochs | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " (chosen)" if r is best else ""
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f}{mark} | {r[4]:.4f} | {r[5]:.4f} | {r[6]} "
                     f"| {r[7]:.0f} s |")
    text = f"{args.model}, LastFM\n\n" + "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
