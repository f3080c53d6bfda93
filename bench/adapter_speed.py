"""Where a trained LoRA checkpoint's ranking time goes: samples/s of `LMScorer` (the prompt alone, λ 0; the
`ranking_rate` of bench/harness.py) on the checkpoint with its peft adapter unmerged (`load_model`, as
`evaluate` loaded it before 2026-12-06), a profile of one pass by operator, and the same checkpoint as
`evaluate` loads it now (`lora.for_inference`, which `load_for_inference` calls: a float32 adapter merged).
Speed only; one process.

    .venv/bin/python bench/adapter_speed.py runs/cooc/lastfm/train1024/hybrid-sdpo/model \\
        runs/cooc/lastfm/data1024/eval.jsonl --samples 48
"""

from __future__ import annotations

import argparse

import torch
from harness import ranking_rate  # bench/ is on the path when this file runs as a script
from torch.profiler import ProfilerActivity, profile

from sdporec.data.samples import read_samples
from sdporec.evaluation.scoring import LMScorer
from sdporec.models.checkpoints import Checkpoint
from sdporec.models.loading import load_model
from sdporec.models.lora import for_inference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a trained checkpoint directory (an adapter, for the merged row)")
    ap.add_argument("data", help="samples to rank (JSONL or the paper's JSON)")
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = read_samples(args.data, "eval")[: args.samples]
    model, codec = load_model(args.model)  # loaded once: unmerged first, then merged as evaluate merges it
    record = Checkpoint.read(args.model)
    domain, task = record.domain(None), record.task(None)  # the prompts its training asked
    rate, tokens = ranking_rate(model, codec, samples, args.batch_size, domain, task)
    print(
        f"{type(model).__name__}; prompt tokens (mean) {tokens:.1f}; "
        f"answer tokens {len(codec.encode_answer(samples[0].candidates[0]))}"
    )
    print(f"adapter unmerged: {rate:.2f} samples/s", flush=True)
    scorer = LMScorer(model, codec, domain, batch_size=args.batch_size, progress=False, task=task)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scorer(samples[: 2 * args.batch_size])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    merged = for_inference(model, "float32", False)
    rate = ranking_rate(merged, codec, samples, args.batch_size, domain, task)[0]
    print(f"as evaluate loads it ({type(merged).__name__}): {rate:.2f} samples/s")


if __name__ == "__main__":
    main()
