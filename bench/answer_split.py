"""Where an answer's log-prob goes: its title tokens, and the EOS that ends it.

A preference loss compares whole answers (title + EOS), so it also pushes EOS up after the chosen title
and down after the negatives' titles. This splits each model's log-probs of the target answer and of one
non-target answer per sample (the first in the list) into title and EOS parts, with the evaluation prompt
(template 0), so checkpoints before and after preference training can be compared.

    .venv/bin/python bench/answer_split.py runs/x/sft/model runs/x/sdpo/model --data VALID.json --limit 500
"""

from __future__ import annotations

import argparse
import json

import torch


def padded(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([x + [value] * (length - len(x)) for x in rows])


def split(model, codec, samples, domain: str, batch_size: int, task: str = "candidates") -> dict[str, float]:
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import IGNORE, sequence_logprobs

    sums = {"target_title": 0.0, "target_eos": 0.0, "other_title": 0.0, "other_eos": 0.0}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        for role in ("target", "other"):
            rows, titles, eos = [], [], []
            for s in chunk:
                answer = s.target if role == "target" else next(c for c in s.candidates if c != s.target)
                prompt, ans = (
                    codec.encode_prompt(build_prompt(s.history, s.candidates, domain, 0, task)),
                    codec.encode_answer(answer),
                )
                ids = prompt + ans
                rows.append(ids)
                titles.append([IGNORE] * len(prompt) + ans[:-1] + [IGNORE])
                eos.append([IGNORE] * (len(ids) - 1) + ans[-1:])
            length = max(map(len, rows))
            ids, mask = padded(rows, codec.pad_id, length), padded([[1] * len(r) for r in rows], 0, length)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits
            sums[f"{role}_title"] += sequence_logprobs(logits, padded(titles, IGNORE, length))[0].sum().item()
            sums[f"{role}_eos"] += sequence_logprobs(logits, padded(eos, IGNORE, length))[0].sum().item()
    return {k: round(v / len(samples), 4) for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    from sdporec.data.samples import read_samples
    from sdporec.models.checkpoints import Checkpoint
    from sdporec.models.loading import load_model

    samples = read_samples(args.data, "eval")[: args.limit]
    print("| model | target title | target EOS | other title | other EOS |")
    print("|---|---|---|---|---|")
    for path in args.models:
        model, codec = load_model(path)
        record = Checkpoint.read(path)  # the prompts its training asked: domain and task
        r = split(model, codec, samples, record.domain(None), args.batch_size, record.task(None))
        print(f"| {path} | {r['target_title']} | {r['target_eos']} | {r['other_title']} | {r['other_eos']} |")
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
