"""The whole catalogue against 20 candidates: what ranking every MovieLens-100K item costs per sample next to
ranking the sample's own 20 candidates, the same samples and next-item prompts, in one process and one run
(ratios are what to compare; rates move between machines).

Rows (weights untrained: speed does not depend on their values):
- `builtin`: the built-in backbone (hidden 128, 2 layers) over MovieLens's titles: one token per item.
- `smollm2-items`: SmolLM2-135M-Instruct with one added token per item (`--item-tokens --item-text token`).
  Item tokens rank the catalogue from the prompt's last position: one forward pass per batch of prompts.
- `smollm2-text`: SmolLM2 reading titles as text: every title's answer (tokens then EOS) on the prompt's key/value
  cache, 64 titles per forward pass; on fewer samples, since each costs a pass over every title's tokens.

With `--checkpoint DIR` (an item-token checkpoint trained on the next-item task) it also measures what leaving
the EOS out of the catalogue score changes: on the test samples' 20-candidate lists, HR@1 and how often the top
candidate agrees, ranked by log p(item) alone and by log p(item) + log p(EOS | item) (the ranking protocol's).

    .venv/bin/python bench/catalogue_speed.py                     # 64 samples (text: 4), batch 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from harness import (  # bench/ is on the path when this file runs as a script
    ROOT,
    movielens,
    speed_record,
    with_item_tokens,
)


def timed(fn, warm, samples) -> float:
    """samples/s of `fn(samples)` after one call on `warm`."""
    fn(warm)
    started = time.perf_counter()
    fn(samples)
    return len(samples) / (time.perf_counter() - started)


def row(name, model, codec, samples, items, batch: int) -> dict:
    from sdporec.evaluation.lm_catalogue import LMCatalogue
    from sdporec.evaluation.scoring import LMScorer

    model.eval()
    scorer = LMScorer(model, codec, "movies", batch, progress=False, task="next-item")
    ranker = LMCatalogue(scorer)
    with torch.no_grad():
        listed = timed(scorer, samples[:batch], samples)
        whole = timed(lambda part: ranker(part, items), samples[:1], samples)
    out = {
        "samples": len(samples),
        "list_samples_per_s": round(listed, 3),
        "catalogue_samples_per_s": round(whole, 3),
        "catalogue_cost_x_list": round(listed / whole, 2),
        "items": len(items),
    }
    print(name, json.dumps(out), flush=True)
    return out


def eos_effect(checkpoint: str, samples) -> dict:
    """HR@1 on the lists by log p(item) alone and with its EOS, and how often their top candidates agree."""
    from sdporec.evaluation.scoring import LMScorer
    from sdporec.models.loading import load_model

    model, codec = load_model(checkpoint)
    scorer = LMScorer(model.eval(), codec, "movies", 16, progress=False, task="next-item")
    prompts = [scorer.prompt(s) for s in samples]
    with torch.no_grad():
        alone = scorer.answer_scores(prompts, [[[codec.title_id(c)] for c in s.candidates] for s in samples])
        full = scorer.answer_scores(prompts, [[codec.encode_answer(c) for c in s.candidates] for s in samples])
    tops = [(max(range(len(a)), key=a.__getitem__), max(range(len(f)), key=f.__getitem__)) for a, f in zip(alone, full)]
    hits = [(s.candidates[a] == s.target, s.candidates[f] == s.target) for s, (a, f) in zip(samples, tops)]
    return {
        "samples": len(samples),
        "hr@1_item_alone": round(sum(h[0] for h in hits) / len(hits), 4),
        "hr@1_with_eos": round(sum(h[1] for h in hits) / len(hits), 4),
        "same_top": round(sum(a == f for a, f in tops) / len(tops), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "catalogue-speed"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--text-samples", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default="", help="a next-item item-token checkpoint: the EOS's effect on lists")
    ap.add_argument("--eos-samples", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sdporec.evaluation.catalogue import Catalogue
    from sdporec.models.builtin import BuiltinSize, build_builtin
    from sdporec.models.loading import load_model, quiet_transformers
    from sdporec.models.sources import resolve_model

    quiet_transformers()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, samples = movielens(out, max(args.samples, args.eos_samples if args.checkpoint else 0))
    items = Catalogue.read(out / "prepared" / "items.txt")
    results = {}
    builtin, codec = build_builtin(items.titles, BuiltinSize(128, 2, 4), 0)
    results["builtin"] = row("builtin", builtin.float(), codec, samples[: args.samples], items, args.batch_size)
    model, text = load_model(resolve_model("smollm2-135m"))
    with_items, hybrid = with_item_tokens(model, text, items.titles, "token")
    results["smollm2-items"] = row("smollm2-items", with_items, hybrid, samples[: args.samples], items, args.batch_size)
    del with_items
    results["smollm2-text"] = row("smollm2-text", model, text, samples[: args.text_samples], items, args.batch_size)
    record = speed_record("catalogue_speed.py", batch_size=args.batch_size, rows=results)
    if args.checkpoint:
        record["eos"] = eos_effect(args.checkpoint, samples[: args.eos_samples])
        print("eos", json.dumps(record["eos"]), flush=True)
    (out / "speed.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        "| row | items | samples | 20 candidates, samples/s | whole catalogue, samples/s | catalogue cost / list cost |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['items']} | {r['samples']} | {r['list_samples_per_s']:.2f} | "
            f"{r['catalogue_samples_per_s']:.2f} | {r['catalogue_cost_x_list']:.2f}x |"
        )


if __name__ == "__main__":
    main()
