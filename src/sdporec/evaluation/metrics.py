"""Metrics: pure functions.

Ranking: each sample contributes the 0-based rank of its target among the candidates (ties broken by
the candidate's position in the prompt, so a constant scorer gets no free credit from the scores). Ranking the
whole catalogue (`evaluation/catalogue.py`) gives a rank the same way, among every item but the history, and
adds the cut-offs 10 and 20 (`CATALOGUE_KEYS`).
Generation (the paper's protocol): an answer is valid when exactly one candidate title occurs in it, a hit
when that title is the target; HR@1 = hits / all samples, ValidRatio = valid / all samples.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

METRIC_KEYS = ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr", "valid_ratio", "n")


class NonFiniteError(ValueError):
    """A number that must be finite is not: a candidate's score, a training loss or gradient norm."""


def first_non_finite(scores: Sequence[float]) -> int | None:
    """Index of the first score that is NaN or ±inf (None where all are finite)."""
    return next((i for i, v in enumerate(scores) if not math.isfinite(v)), None)


def rank_of_target(scores: Sequence[float], target_index: int) -> int:
    """0-based rank of the target: candidates scored higher, plus equal ones listed before it. Scores must
    be finite: a NaN compares false with everything, so it would rank the target first (a free hit)."""
    bad = first_non_finite(scores)
    if bad is not None:
        raise NonFiniteError(f"candidate {bad} has score {scores[bad]}; scores must be finite numbers")
    t = scores[target_index]
    return sum(1 for i, s in enumerate(scores) if s > t or (s == t and i < target_index))


def rank_contributions(rank: int) -> dict[str, float]:
    """One sample's share of each ranking metric, from its target's 0-based rank (a metric over samples is
    the mean of the shares): the one place the cut-offs live."""
    gain = 1 / math.log2(rank + 2)
    return {
        "hr@1": float(rank < 1),
        "hr@5": float(rank < 5),
        "hr@10": float(rank < 10),
        "hr@20": float(rank < 20),
        "ndcg@5": gain if rank < 5 else 0.0,
        "ndcg@10": gain if rank < 10 else 0.0,
        "ndcg@20": gain if rank < 20 else 0.0,
        "mrr": 1 / (rank + 1),
    }


RANK_KEYS = ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr")  # a list of 20 candidates
CATALOGUE_KEYS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")  # the whole catalogue


def ranking_metrics(ranks: Sequence[int], keys: Sequence[str] = RANK_KEYS) -> dict[str, float]:
    n = len(ranks)
    if n == 0:
        raise ValueError("no samples to measure")
    shares = [rank_contributions(r) for r in ranks]
    return {**{k: sum(s[k] for s in shares) / n for k in keys}, "valid_ratio": 1.0, "n": n}


def parse_generation(text: str, candidates: Sequence[str]) -> str | None:
    """The one candidate title that occurs in the generated text, or None when zero or several do."""
    found = [c for c in candidates if c in text]
    return found[0] if len(found) == 1 else None


def generation_metrics(answers: Sequence[str | None], targets: Sequence[str]) -> dict[str, float | None]:
    n = len(targets)
    if n == 0:
        raise ValueError("no samples to measure")
    valid = sum(a is not None for a in answers)
    hits = sum(a == t for a, t in zip(answers, targets))
    return {
        "hr@1": hits / n,
        "hr@5": None,
        "ndcg@5": None,
        "ndcg@10": None,
        "mrr": None,
        "valid_ratio": valid / n,
        "n": n,
    }


def per_sample_metrics(rows: Sequence[dict]) -> dict[str, list[float]]:
    """Each sample's contribution to every metric, from `predictions.jsonl` rows of either protocol (a
    metric over all samples is the mean of its list)."""
    if rows and "rank" in rows[0]:
        shares = [rank_contributions(r["rank"]) for r in rows]
        keys = CATALOGUE_KEYS if "catalogue" in rows[0] else RANK_KEYS
        return {k: [s[k] for s in shares] for k in keys}
    return {"hr@1": [float(bool(r["hit"])) for r in rows], "valid_ratio": [float(bool(r["valid"])) for r in rows]}


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Hashable] | None = None,
) -> tuple[float, float, float]:
    """mean(a) - mean(b) over paired samples, and its percentile bootstrap interval at `level`: the samples
    are drawn with replacement `resamples` times, the same draw for both (they are paired). `clusters`: a label
    per element; elements of one label (one test sample measured under several seeds) are drawn together, and
    each resample's mean is over the elements drawn (a cluster bootstrap)."""
    import torch

    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists")
    if clusters is not None and len(clusters) != len(a):
        raise ValueError(f"paired_bootstrap's clusters has {len(clusters)} labels for {len(a)} elements")
    diffs = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    sums = sizes = None
    if clusters is not None:
        index = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
        which = torch.tensor([index[c] for c in clusters])
        sums = torch.zeros(len(index), dtype=torch.float64).index_add_(0, which, diffs)
        sizes = torch.zeros(len(index), dtype=torch.float64).index_add_(0, which, torch.ones_like(diffs))
    n = len(diffs) if sums is None else len(sums)

    def means(count: int) -> torch.Tensor:
        picked = torch.randint(n, (count, n), generator=generator)
        return diffs[picked].mean(1) if sums is None else sums[picked].sum(1) / sizes[picked].sum(1)

    drawn = torch.cat([means(min(200, resamples - start)) for start in range(0, resamples, 200)]).sort().values
    tail = (1 - level) / 2
    low, high = drawn[int(tail * resamples)], drawn[min(resamples - 1, int((1 - tail) * resamples))]
    return diffs.mean().item(), low.item(), high.item()


def beam_hits(rows: Sequence[dict]) -> dict:
    """HR@5 and HR@10 of constrained decoding with at least 5, 10 beams (the target among a row's first k)."""
    beams = min((len(r.get("beams") or ()) for r in rows), default=0)
    return {f"hr@{k}": sum(r["target"] in r["beams"][:k] for r in rows) / len(rows) for k in (5, 10) if beams >= k}
