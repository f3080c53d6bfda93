"""Item tokens against text titles, speed only: SmolLM2-135M-Instruct ranking 20 candidates and LoRA SFT steps,
the same MovieLens samples for every row, in one process and one run (ratios are what to compare).

Rows: `text` (titles as BPE text, the answer a title's tokens then EOS; packed layout), `hybrid-title` (the
prompt shows `title <|item:N|>`, the answer is the item token then EOS; single-token scoring), `hybrid-token`
(the prompt shows the item tokens alone). New rows start as the mean of the title's token embeddings; speed
does not depend on their values.

    .venv/bin/python bench/items_speed.py                        # 100 samples, batch 8, 6 SFT steps per row
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from harness import (  # bench/ is on the path when this file runs as a script
    movielens,
    ranking_rate,
    speed_record,
    with_item_tokens,
)

ROOT = Path(__file__).resolve().parents[1]


def rows(model, text_codec, titles, args):
    """(name, model, codec) for the text row and both hybrid rows (each with its own resized copy)."""
    out = [("text", model, text_codec)]
    for item_text in ("title", "token"):
        out.append((f"hybrid-{item_text}", *with_item_tokens(model, text_codec, titles, item_text)))
    return out


def sft_rate(model, codec, samples, batch: int, steps: int) -> float:
    """Training samples/s of LoRA SFT steps (forward, backward, AdamW) at micro-batch `batch`, after one warm-up."""
    from sdporec.data.batching import collate
    from sdporec.data.prompts import training_prompt
    from sdporec.models.lora import add_lora
    from sdporec.models.scoring import scoring_layout
    from sdporec.training.losses import sft_loss

    lora = add_lora(copy.deepcopy(model), 16, 32, 0.05, tokens=getattr(codec, "token_ids", ()))
    lora.train()
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    score = scoring_layout("packed", codec.kind == "hybrid")

    def step(i: int) -> None:
        chunk = [samples[(i * batch + j) % len(samples)] for j in range(batch)]
        b = collate(
            [codec.encode_prompt(training_prompt(s, "movies", 0, 0)) for s in chunk],
            [[codec.encode_answer(s.target)] for s in chunk],
            codec.pad_id,
        )
        logps, counts = score(lora, b)
        (sft_loss(logps[:, 0]).sum() / counts.sum()).backward()
        opt.step()
        opt.zero_grad()

    step(0)
    started = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "items-speed"))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sft-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sdporec.data.candidates import catalogue
    from sdporec.models.loading import load_model, quiet_transformers
    from sdporec.models.sources import resolve_model

    quiet_transformers()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, samples = movielens(out, args.samples)
    model, codec = load_model(resolve_model("smollm2-135m"))
    results = {}
    for name, m, c in rows(model, codec, catalogue(train + samples), args):
        rank, tokens = ranking_rate(m, c, samples, args.batch_size)
        results[name] = {
            "ranking_samples_per_s": round(rank, 3),
            "prompt_tokens": round(tokens, 1),
            "sft_samples_per_s": round(sft_rate(m, c, train, args.batch_size, args.sft_steps), 3),
        }
        print(name, json.dumps(results[name]), flush=True)
    base = results["text"]
    for r in results.values():
        r["ranking_vs_text"] = round(r["ranking_samples_per_s"] / base["ranking_samples_per_s"], 2)
        r["sft_vs_text"] = round(r["sft_samples_per_s"] / base["sft_samples_per_s"], 2)
    record = speed_record("items_speed.py", samples=len(samples), batch_size=args.batch_size, rows=results)
    (out / "speed.json").write_text(json.dumps(record, indent=2) + "\n")
    print("| row | prompt tokens | ranking samples/s | × text | LoRA SFT samples/s | × text |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['prompt_tokens']:.0f} | {r['ranking_samples_per_s']:.2f} | {r['ranking_vs_text']:.2f} | "
            f"{r['sft_samples_per_s']:.2f} | {r['sft_vs_text']:.2f} |"
        )


if __name__ == "__main__":
    main()
