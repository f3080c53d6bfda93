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

    .venv/bin/python bench/quality.py [--out runs/quality] [--only lastfm|movielens|leaky]
        [--sft-epochs N] [--hidden H --layers L] [--baseline-epochs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = [sys.executable, "-m", "sdporec"]


def sh(*args: str) -> None:
    if args[0] in ("prepare", "sft", "dpo", "evaluate", "baseline"):
        args = (*args, "--overwrite")    # a rerun of the bench replaces its runs
    print("$ sdporec " + " ".join(args), flush=True)
    subprocess.run(BIN + list(args), check=True, stdout=subprocess.DEVNULL)


def timed(out: Path, fn) -> dict:
    """Run fn once per row directory; its wall time is stored beside the metrics."""
    done = out / "row.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.time()
    fn()
    row = {"seconds": round(time.time() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row))
    return row


def metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def lastfm_data(work: Path, leaky: bool) -> dict[str, str]:
    """train / valid (last 5% of training rows) / eval files."""
    from sdporec.samples import read_samples, write_samples

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
        sh("prepare", "movielens-100k", "--raw", str(SHARED / "ml-100k"), "--out", str(work),
           *(["--paper-seeding"] if leaky else []))
    return {"train": str(work / "train.jsonl"), "valid": str(work / "valid.jsonl"), "eval": str(work / "test.jsonl")}


def lm_rows(files: dict[str, str], out: Path, domain: str, sft_epochs: int, leaky: bool,
            size: tuple[int, int] = (128, 2)) -> dict[str, dict]:
    keep = ["--keep-candidates"] if leaky else []
    common = ["--train", files["train"], "--valid", files["valid"], "--domain", domain, "--eval-samples", "1000",
              "--no-progress", *keep]
    rows = {}
    stages = [("sft", ["sft", "--epochs", str(sft_epochs), "--hidden", str(size[0]), "--layers", str(size[1])]),
              ("dpo", ["dpo", "--loss", "dpo", "--negatives", "1", "--eval-every", "300"]),
              ("sdpo", ["dpo", "--loss", "sdpo", "--negatives", "3", "--eval-every", "300"])]
    for name, args in stages:
        run = out / name
        model = ["--model", str(out / "sft" / "model")] if name != "sft" else []

        def go(run=run, args=args, model=model):
            sh(*args, *model, "--out", str(run), *common)
            for protocol in ("ranking", "generation"):
                sh("evaluate", "--model", str(run / "model"), "--data", files["eval"], "--domain", domain,
                   "--out", str(run / f"eval-{protocol}"), "--protocol", protocol, "--no-progress")
        row = timed(run, go)
        rank, gen = metrics(run / "eval-ranking"), metrics(run / "eval-generation")
        rows[{"sft": "SFT", "dpo": "DPO (K=1)", "sdpo": "S-DPO (K=3)"}[name]] = {
            **{k: rank[k] for k in ("hr@1", "ndcg@5", "mrr")}, "gen_hr@1": gen["hr@1"],
            "valid_ratio": gen["valid_ratio"], "seconds": row["seconds"]}
    return rows


def baseline_rows(files: dict[str, str], out: Path, epochs: int) -> dict[str, dict]:
    rows = {}
    for name, label in (("popularity", "popularity"), ("item-counts", "item counts"), ("sasrec", "SASRec"),
                        ("gru4rec", "GRU4Rec")):
        run = out / name
        row = timed(run, lambda name=name, run=run: sh("baseline", name, "--train", files["train"], "--valid",
                                                       files["valid"], "--eval", files["eval"], "--out", str(run),
                                                       "--epochs", str(epochs), "--no-progress"))
        m = metrics(run)
        rows[label] = {**{k: m[k] for k in ("hr@1", "ndcg@5", "mrr")}, "seconds": row["seconds"]}
    return rows


def table(title: str, rows: dict[str, dict]) -> str:
    lines = [f"**{title}**", "", "| model | HR@1 | NDCG@5 | MRR | HR@1 (generation) | ValidRatio | wall time |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        gen = f"{r['gen_hr@1']:.4f} | {r['valid_ratio']:.4f}" if "gen_hr@1" in r else "– | –"
        lines.append(f"| {name} | {r['hr@1']:.4f} | {r['ndcg@5']:.4f} | {r['mrr']:.4f} | {gen} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "quality"))
    ap.add_argument("--only", choices=("lastfm", "movielens", "leaky"), default=None)
    ap.add_argument("--sft-epochs", type=int, default=3)
    ap.add_argument("--baseline-epochs", type=int, default=30, help="most epochs of SASRec and GRU4Rec")
    ap.add_argument("--hidden", type=int, default=128, help="built-in backbone width for the LM rows")
    ap.add_argument("--layers", type=int, default=2, help="built-in backbone depth for the LM rows")
    args = ap.parse_args()
    out = Path(args.out)
    size = (args.hidden, args.layers)
    for need in (SHARED / "lastfm" / "resampled" / "lastfm-val.json", SHARED / "ml-100k" / "u.data"):
        if not need.is_file():
            sys.exit(f"missing {need} (see ../shared/data/README.md)")
    tables = []
    if args.only in (None, "lastfm"):
        files = lastfm_data(out / "lastfm" / "data", leaky=False)
        rows = {**baseline_rows(files, out / "lastfm", args.baseline_epochs),
                **lm_rows(files, out / "lastfm", "music", args.sft_epochs, False, size)}
        tables.append(table("LastFM, resampled/lastfm-val.json (2,767 samples, negatives drawn per sample)", rows))
    if args.only in (None, "movielens"):
        files = movielens_data(out / "movielens" / "data", leaky=False)
        rows = {**baseline_rows(files, out / "movielens", args.baseline_epochs),
                **lm_rows(files, out / "movielens", "movies", args.sft_epochs, False, size)}
        tables.append(table("MovieLens-100K test (10,497 samples, negatives drawn per sample)", rows))
    if args.only in (None, "leaky"):
        leaky = {}
        files = lastfm_data(out / "leaky-lastfm" / "data", leaky=True)
        leaky.update({f"LastFM {k}": v for k, v in lm_rows(files, out / "leaky-lastfm", "music", 1, True).items()})
        files = movielens_data(out / "leaky-movielens" / "data", leaky=True)
        leaky.update({f"MovieLens {k}": v for k, v in lm_rows(files, out / "leaky-movielens", "movies", 1, True).items()})
        tables.append(table("LEAKY: the paper's target-seeded candidate lists (comparison with papers only; "
                            "1 SFT epoch, training on the file's own lists)", leaky))
    text = "\n\n".join(tables)
    (out / "tables.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
