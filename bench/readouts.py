"""The history readout across seeds. For each seed's LM stages of a `bench/quality.py` run (its --out DIR), every
candidate of the data set's evaluation file is ranked by (1 - λ) x its answer log-prob in the prompt + λ x its
log-prob as the next title after the history alone, for each λ of --weights (`sdporec evaluate --history-readout
λ`; `bench/prompt_cost.py` per model). λ is chosen per model on the validation file (held-out training rows),
never on the evaluation file. The tables: mean ± std over seeds, and paired bootstrap 95% intervals (each
sample's metric averaged over seeds first, as quality.py) of every readout against SASRec, GRU4Rec and the
prompt alone.

    .venv/bin/python bench/readouts.py --runs DIR --only lastfm|movielens [--seeds 0 1 2] [--stages sft sdpo]

Each model's sweep is kept in DIR/<data set>/seed<s>/<stage>/readout (w<λ>/ and selection.json) and reused;
the tables go to DIR/<data set>/readouts.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prompt_cost import WEIGHTS, sweep  # noqa: E402
from quality import SHARED, differences, metrics, ranking_dir  # noqa: E402

DATA = {
    "lastfm": ("music", lambda d: str(SHARED / "lastfm" / "resampled" / "lastfm-val.json")),
    "movielens": ("movies", lambda d: str(d / "data" / "test.jsonl")),
}
STAGES = {"sft": "SFT", "dpo": "DPO (K=1)", "sdpo": "S-DPO (K=3)"}


def model_sweeps(
    root: Path, seeds: list[int], stages: list[str], weights: list[float], domain: str, eval_file: str
) -> dict[tuple[int, str], dict]:
    """(seed, stage) -> its selection record, swept where not kept already."""
    out = {}
    for seed in seeds:
        for stage in stages:
            run = root / f"seed{seed}" / stage
            kept = run / "readout" / "selection.json"
            if not kept.is_file():
                print(f"$ sweep {run / 'model'}", flush=True)
                sweep(
                    str(run / "model"),
                    eval_file,
                    str(root / "data" / "valid.jsonl"),
                    domain,
                    weights,
                    str(run / "readout"),
                )
            out[seed, stage] = json.loads(kept.read_text())
    return out


def readout_rows(root: Path, seeds: list[int], stages: list[str], sweeps: dict) -> dict[str, list[Path]]:
    """Row name -> one predictions folder per seed: the baselines, and per stage λ = 0, 0.5, 1 and the chosen λ."""
    rows = {name: [root / f"seed{s}" / d for s in seeds] for name, d in (("SASRec", "sasrec"), ("GRU4Rec", "gru4rec"))}
    for stage in stages:
        label = STAGES[stage]
        for w in ("0", "0.5", "1"):
            rows[f"{label}, λ {w}"] = [root / f"seed{s}" / stage / "readout" / f"w{w}" for s in seeds]
        rows[f"{label}, λ chosen"] = [
            root / f"seed{s}" / stage / "readout" / f"w{sweeps[s, stage]['chosen']}" for s in seeds
        ]
    return rows


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def table(rows: dict[str, list[Path]], sweeps: dict, stages: list[str]) -> str:
    lines = ["| row | seeds | HR@1 | NDCG@5 | MRR |", "|---|---|---|---|---|"]
    for name, runs in rows.items():
        ms = [metrics(ranking_dir(r)) for r in runs]
        cells = [mean_std([m[k] for m in ms]) for k in ("hr@1", "ndcg@5", "mrr")]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    chosen = {stage: [sweeps[s, st]["chosen"] for (s, st) in sorted(sweeps) if st == stage] for stage in stages}
    lines.append("")
    lines.append(
        "λ chosen on the validation rows, by seed: "
        + "; ".join(f"{STAGES[st]} {', '.join(ws)}" for st, ws in chosen.items())
    )
    pairs = [(a, b) for a in rows if "λ" in a for b in ("SASRec", "GRU4Rec", a.split(",")[0] + ", λ 0") if a != b]
    lines += ["", "| a − b | HR@1 difference | 95% interval | a is |", "|---|---|---|---|"]
    for d in differences(rows, pairs):
        if d["metric"] == "hr@1":
            lines.append(
                f"| {d['a']} − {d['b']} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | {d['a_is']} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="a bench/quality.py --out folder")
    ap.add_argument("--only", choices=tuple(DATA), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=["sft"])
    ap.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    args = ap.parse_args()
    root = Path(args.runs) / args.only
    domain, eval_file = DATA[args.only][0], DATA[args.only][1](root)
    missing = [
        str(root / f"seed{s}" / st / "model")
        for s in args.seeds
        for st in args.stages
        if not (root / f"seed{s}" / st / "model").is_dir()
    ]
    if missing:
        sys.exit("readouts: no model at " + ", ".join(missing))
    sweeps = model_sweeps(root, args.seeds, args.stages, args.weights, domain, eval_file)
    text = f"**{args.only}: readouts, {eval_file}**\n\n" + table(
        readout_rows(root, args.seeds, args.stages, sweeps), sweeps, args.stages
    )
    (root / "readouts.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
