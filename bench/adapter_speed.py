"""Where a trained LoRA checkpoint's ranking time goes: samples/s of `LMScorer` (the prompt alone, λ 0) on the
checkpoint as `evaluate` loads it (peft adapter unmerged), a profile of one pass by operator, and the same
checkpoint with its adapter merged into the weights (`merge_and_unload`). Speed only; one process.

    .venv/bin/python bench/adapter_speed.py runs/cooc/lastfm/train1024/hybrid-sdpo/model \\
        runs/cooc/lastfm/data1024/eval.jsonl --samples 48
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sdporec.data.prompts import build_prompt
from sdporec.data.samples import read_samples
from sdporec.evaluation.scoring import LMScorer
from sdporec.models.loading import load_for_inference


def rate(model, codec, domain: str, samples, batch: int) -> float:
    """Samples/s of the prompt-alone ranking over `samples`, after one warm-up batch."""
    scorer = LMScorer(model, codec, domain, batch_size=batch, progress=False, layout="packed", history_readout=0.0)
    scorer(samples[:batch])
    started = time.time()
    scorer(samples)
    return len(samples) / (time.time() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a trained checkpoint directory (an adapter, for the merged row)")
    ap.add_argument("data", help="samples to rank (JSONL or the paper's JSON)")
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = read_samples(args.data, "eval")[:args.samples]
    inf = load_for_inference(args.model, device="cpu")
    model, codec, domain = inf.model, inf.codec, inf.domain
    tokens = sum(len(codec.encode_prompt(build_prompt(s.history, s.candidates, domain))) for s in samples)
    print(f"{type(model).__name__}; prompt tokens (mean) {tokens / len(samples):.1f}; "
          f"answer tokens {len(codec.encode_answer(samples[0].candidates[0]))}")
    print(f"as loaded: {rate(model, codec, domain, samples, args.batch_size):.2f} samples/s", flush=True)
    scorer = LMScorer(model, codec, domain, batch_size=args.batch_size, progress=False, layout="packed")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scorer(samples[:2 * args.batch_size])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    if hasattr(model, "merge_and_unload"):
        merged = model.merge_and_unload().eval()
        print(f"adapter merged: {rate(merged, codec, domain, samples, args.batch_size):.2f} samples/s")


if __name__ == "__main__":
    main()
