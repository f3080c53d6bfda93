"""`sdporec audit`: what a sample file holds, whether its candidate lists are sound, and whether they leak.

The leak check answers each sample with the target of the training sample whose candidate list shares
the most titles with it, never looking at the history. Measured with `sdporec audit
../shared/data/lastfm/lastfm-val.json --train ../shared/data/lastfm/lastfm-train.json`: 0.964 on the
paper's lists (they give the target away), 0.001 on `resampled/` (negatives drawn per sample).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sdporec.config import require_input, setting
from sdporec.data.hybrid import item_key
from sdporec.data.samples import Sample, read_samples
from sdporec.errors import require
from sdporec.evaluation.baselines import popularity_scorer
from sdporec.evaluation.evaluate import evaluate_ranking
from sdporec.files import atomic_write_text

LEAK_WARNING = 0.10


@dataclass
class AuditConfig:
    file: str = setting("", "samples to audit (the paper's JSON or JSON Lines)", positional=True)
    train: str = setting("", "training samples: popularity and the leak check use them (default: the file itself, "
                     "each sample matched against the others)")
    out: str = setting("", "also write the audit as JSON to this file")

    def validate(self) -> None:
        require(bool(self.file), "file", "required")
        require_input(self.file, "file")
        require_input(self.train, "train")
        require(
            not (self.out and Path(self.out).is_dir()),
            "out",
            f"{self.out} is a directory; give a file name for the JSON",
        )


def candidate_checks(samples: Sequence[Sample]) -> dict[str, int]:
    """Number of samples failing each check (0 everywhere is a pass)."""
    return {
        "duplicate_candidates": sum(len(set(s.candidates)) != len(s.candidates) for s in samples),
        "target_not_in_candidates": sum(s.target not in s.candidates for s in samples),
        "history_item_among_negatives": sum(bool(set(s.history) & (set(s.candidates) - {s.target}))
                                            for s in samples),
    }


def popularity_hr1(samples: Sequence[Sample], train: Sequence[Sample]) -> float:
    """The popularity baseline's HR@1, through the same scorer and metrics as `sdporec baseline`."""
    return evaluate_ranking(popularity_scorer(train), samples)[0]["hr@1"]


def leak_hr1(samples: Sequence[Sample], train: Sequence[Sample], same_file: bool, chunk: int = 512) -> float:
    """HR@1 of answering with the target of the training sample whose negatives (its candidates other
    than its target) overlap most with the sample's candidate list. Counting a training sample's own
    target would favour training samples with the same target whatever the seeding, so it is left out."""
    titles = {t: i for i, t in enumerate(sorted({c for s in list(samples) + list(train) for c in s.candidates}))}
    rows = [i for i, s in enumerate(train) for c in s.candidates if c != s.target]
    cols = [titles[c] for s in train for c in s.candidates if c != s.target]
    with warnings.catch_warnings():  # torch marks sparse CSR as beta; the product below is plain
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.ones(len(rows)),
                                         (len(train), len(titles))).to_sparse_csr()   # (N_train, n_titles)
    hits = 0
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        query = torch.zeros(len(titles), len(part))                                    # (n_titles, chunk)
        for j, s in enumerate(part):
            query[[titles[c] for c in s.candidates], j] = 1.0
        overlap = matrix @ query                                                        # (N_train, chunk)
        if same_file:  # a sample must not find itself
            idx = torch.arange(start, start + len(part))
            overlap[idx, torch.arange(len(part))] = -1
        best = overlap.argmax(0).tolist()
        hits += sum(train[b].target == s.target for b, s in zip(best, part))
    return hits / len(samples)


def audit(samples: Sequence[Sample], train: Sequence[Sample] | None = None) -> dict:
    same = train is None
    train = samples if same else train
    hist = Counter(len(s.history) for s in samples)
    items = {t for s in samples for t in s.history + s.candidates}
    return {
        "samples": len(samples),
        "users": len({s.user for s in samples if s.user is not None}) or None,
        "distinct_items": len(items),
        "shared_titles": sum(item_key(t) != t for t in items),
        "history_lengths": {str(k): hist[k] for k in sorted(hist)},
        "candidates_per_sample": sorted(Counter(len(s.candidates) for s in samples).items()),
        "checks": candidate_checks(samples),
        "popularity_hr@1": popularity_hr1(samples, train) if not same else None,
        "leak_hr@1": leak_hr1(samples, train, same),
        "leak_reference": "the file itself (others)" if same else "training file",
    }


def run_audit(cfg: AuditConfig) -> dict:
    samples = read_samples(cfg.file)
    train = read_samples(cfg.train, "train") if cfg.train else None
    result = audit(samples, train)
    failed = [name for name, n in result["checks"].items() if n]
    result["passed"] = not failed
    print(f"{cfg.file}: {result['samples']} samples, {result['users'] or '?'} users, "
          f"{result['distinct_items']} distinct items")
    if result["shared_titles"]:
        print(f"{result['shared_titles']} titles name item ids that share another id's title (marked ' [item N]' by "
              "`prepare`); `sft --item-tokens` gives each the token of the title it shares")
    print("history lengths: " + ", ".join(f"{k}: {v}" for k, v in result["history_lengths"].items()))
    for name, n in result["checks"].items():
        print(f"  {'FAIL' if n else 'ok  '} {name.replace('_', ' ')}: {n} samples")
    if result["popularity_hr@1"] is not None:
        print(f"popularity HR@1 (training targets): {result['popularity_hr@1']:.4f}")
    print(f"leak HR@1 (target of the most similar candidate list in the {result['leak_reference']}): "
          f"{result['leak_hr@1']:.4f}")
    if result["leak_hr@1"] > LEAK_WARNING:
        print("\n" + "!" * 78 + f"\nWARNING: the candidate lists give the target away (leak HR@1 "
              f"{result['leak_hr@1']:.3f} > {LEAK_WARNING}).\nNumbers measured on these lists reward learning "
              "the lists, not the users. Re-draw the\nnegatives per sample (sdporec prepare) before measuring.\n"
              + "!" * 78)
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    if failed:
        raise SystemExit(f"audit failed: {', '.join(failed)}")
    return result
