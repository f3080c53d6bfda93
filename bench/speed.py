"""Speed of the shared-prompt layouts against the paper's layout, on one model, batch and machine.

Training: one S-DPO step (policy forward + backward, reference forward, AdamW) at K = 1, 3, 7, with text
prompts (built-in titles as BPE text), item-token prompts (the built-in backbone) and, where
../shared/data has it, LastFM's artist names as BPE text, in three layouts: the paper's
(prompt repeated per answer), cache (answers on copies of the prompt's key/value cache) and packed
(prompt and answers in one row under a block mask, the default). Evaluation: ranking in the same three
layouts (paper = plain ranking, 20 full sequences per sample) and the paper's generation protocol.
Each case runs in a fresh process so that its peak memory is its own.

    .venv/bin/python bench/speed.py                 # the full table (CPU: a few minutes)
    .venv/bin/python bench/speed.py --hidden 2048 --layers 16 --dtype bfloat16 --device cuda   # ~1B on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from harness import sync  # bench/ is on the path when this file runs as a script

# Real artist names as BPE text, whose lengths vary far more than the built-in titles': used if present.
LASTFM = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm" / "resampled" / "lastfm-train.json"

KINDS = ("text", "builtin", "lastfm-text")  # prompt kinds: built-in titles as BPE text or item tokens, LastFM as text


def build(codec_kind: str, args):
    from sdporec.data.candidates import catalogue
    from sdporec.data.prepare import builtin_splits
    from sdporec.data.prompts import build_prompt
    from sdporec.models.builtin import BuiltinSize, build_builtin
    from sdporec.models.families import build_text_backbone

    if codec_kind == "lastfm-text":
        from sdporec.data.samples import read_samples

        samples = read_samples(LASTFM, "train")[:2000]
    else:
        samples = builtin_splits(users=200, items=300, genres=10, seed=0)["train"]
    size = BuiltinSize(args.hidden, args.layers, args.heads)
    if codec_kind == "builtin":
        model, codec = build_builtin(catalogue(samples), size, 0)
    else:
        texts = [build_prompt(s.history, s.candidates, "music", i % 4).text for i, s in enumerate(samples[:2000])]
        model, codec = build_text_backbone(texts, args.hidden, args.layers, args.heads, 0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return model.to(args.device, dtype), codec, samples


def train_case(args, layout: str, codec_kind: str, k: int) -> dict:
    from sdporec.data.batching import collate, split_chosen_rejected
    from sdporec.data.candidates import draw_negatives
    from sdporec.data.prompts import build_prompt
    from sdporec.models.scoring import scoring_layout
    from sdporec.training.losses import sdpo_loss

    model, codec, samples = build(codec_kind, args)
    ref = build(codec_kind, args)[0].eval()
    fn = scoring_layout(layout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    b = args.batch_size
    batches = []
    for i in range(args.steps + args.warmup):
        chunk = samples[i * b : (i + 1) * b]
        batches.append(
            collate(
                [codec.encode_prompt(build_prompt(s.history, s.candidates)) for s in chunk],
                [[codec.encode_answer(t) for t in [s.target] + draw_negatives(s, k, 0, 0)] for s in chunk],
                codec.pad_id,
            ).to(args.device)
        )
    tokens = sum(int(x.prompt_mask.sum() * (1 + k) + x.answer_mask.sum()) for x in batches[args.warmup :])
    losses = []
    for i, batch in enumerate(batches):
        if i == args.warmup:
            sync(args.device)
            start = time.perf_counter()
        logps, _ = fn(model, batch)
        if i == 0:
            first_logps = logps.sum().item()
        with torch.no_grad():
            ref_logps, _ = fn(ref, batch)
        loss, _, _ = sdpo_loss(*split_chosen_rejected(logps, k), *split_chosen_rejected(ref_logps, k), beta=1.0)
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.mean().item())
    sync(args.device)
    seconds = time.perf_counter() - start
    return {
        "samples_per_s": b * args.steps / seconds,
        "tokens_per_s": tokens / seconds,
        "first_loss": losses[0],
        "first_logps": first_logps,
        "peak_mem_mb": _peak_mb(args.device),
    }


def eval_case(args, method: str, codec_kind: str) -> dict:
    from sdporec.evaluation.evaluate import evaluate_generation, evaluate_ranking
    from sdporec.evaluation.scoring import LMScorer

    model, codec, samples = build(codec_kind, args)
    model.eval()
    samples = samples[: args.eval_samples]
    warm = samples[: args.batch_size]
    run = (
        (lambda xs: evaluate_generation(model, codec, xs, "music", args.batch_size, progress=False))
        if method == "generation"
        else (
            lambda xs: evaluate_ranking(
                LMScorer(model, codec, "music", args.batch_size, progress=False, layout=method), xs
            )
        )
    )
    run(warm)
    sync(args.device)
    start = time.perf_counter()
    metrics, _ = run(samples)
    sync(args.device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": len(samples) / seconds, "hr@1": metrics["hr@1"], "peak_mem_mb": _peak_mb(args.device)}


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def print_tables(results: list[dict]) -> None:
    print(
        "\n| step | prompts | paper layout samples/s | cache | packed | cache / paper | packed / paper "
        "| peak MB paper / cache / packed | same log-probs and loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    kinds = [c for c in KINDS if any(r["codec_kind"] == c for r in results)]
    for c in kinds:
        for k in (1, 3, 7):
            r = {x["layout"]: x for x in results if x.get("k") == k and x["codec_kind"] == c}
            p = r["paper"]
            # Same weights, same batch: the summed answer log-probs and the loss must agree.
            same = all(
                abs(p["first_loss"] - x["first_loss"]) < 1e-5
                and abs(p["first_logps"] - x["first_logps"]) < 1e-5 * max(1.0, abs(p["first_logps"]))
                for x in r.values()
            )
            sps = {lay: r[lay]["samples_per_s"] for lay in r}
            peak = " / ".join(f"{r[lay]['peak_mem_mb']:.0f}" for lay in ("paper", "cache", "packed"))
            print(
                f"| S-DPO K={k} | {c} | {sps['paper']:.1f} | {sps['cache']:.1f} | {sps['packed']:.1f} | "
                f"{sps['cache'] / sps['paper']:.2f}x | {sps['packed'] / sps['paper']:.2f}x | {peak} | "
                f"{'yes' if same else 'NO'} |"
            )
    print(
        "\n| evaluation | prompts | packed ranking samples/s | cache ranking | plain ranking | generation "
        "| packed / plain | packed / generation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in kinds:
        e = {r["method"]: r["samples_per_s"] for r in results if r.get("method") and r["codec_kind"] == c}
        print(
            f"| 20 candidates | {c} | {e['packed']:.1f} | {e['cache']:.1f} | {e['paper']:.1f} | "
            f"{e['generation']:.1f} | {e['packed'] / e['paper']:.1f}x | {e['packed'] / e['generation']:.1f}x |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-samples", type=int, default=96)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        case = json.loads(args.case)
        result = train_case(args, **case) if "k" in case else eval_case(args, **case)
        print(json.dumps(result))
        return
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("case", "out")]
    results = []
    kinds = KINDS
    if not LASTFM.is_file():
        kinds = KINDS[:2]
        print(f"no {LASTFM}: the LastFM-titles rows are left out", flush=True)
    cases = [
        {"layout": lay, "codec_kind": c, "k": k}
        for c in kinds
        for k in (1, 3, 7)
        for lay in ("paper", "cache", "packed")
    ]
    cases += [{"method": m, "codec_kind": c} for c in kinds for m in ("packed", "cache", "paper", "generation")]
    for case in cases:
        proc = subprocess.run(
            [sys.executable, __file__, *passthrough, "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append({**case, **json.loads(proc.stdout.strip().splitlines()[-1])})
        print(json.dumps(results[-1]), flush=True)
    print_tables(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
