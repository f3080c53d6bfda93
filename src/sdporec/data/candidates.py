"""Candidate lists and negatives, drawn without leaking the target.

The paper seeds each sample's 19 negatives with the target's item id, so a target always arrives with
nearly the same list and a model can learn the lists instead of the users (measured on LastFM: the lists
alone give HR@1 0.78). We seed every draw by (seed, split, sample, epoch) instead; the paper's seeding is
kept as `paper_seeded_candidates` for comparisons only, and it is leaky.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from sdporec.data.samples import Sample, sample_error


def sample_rng(*parts: object) -> random.Random:
    """A generator seeded by a string of the parts: stable across runs, processes and Python versions."""
    return random.Random(":".join(str(p) for p in parts))


def catalogue(samples: Sequence[Sample]) -> list[str]:
    """Every title seen in the samples, sorted so that draws do not depend on file order."""
    titles: set[str] = set()
    for s in samples:
        titles.update(s.history)
        titles.update(s.candidates)
    return sorted(titles)


def draw_candidates(history: Sequence[str], target: str, items: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """Target plus n-1 titles drawn uniformly from `items` (distinct titles, as `catalogue` gives) outside the
    history, in shuffled order."""
    excluded = set(history) | {target}
    negatives: list[str] = []
    # Rejection sampling: histories are short next to catalogues, so this stays fast.
    seen: set[str] = set()
    # Counted without a set of the catalogue per sample (5x faster over MovieLens-100K's 97,171 samples).
    pool_size = len(items) - len(excluded.intersection(items))
    if pool_size < n - 1:
        raise ValueError(f"only {pool_size} items outside the history; cannot draw {n - 1} negatives")
    while len(negatives) < n - 1:
        t = items[rng.randrange(len(items))]
        if t not in excluded and t not in seen:
            seen.add(t)
            negatives.append(t)
    out = negatives + [target]
    rng.shuffle(out)
    return out


def paper_seeded_candidates(
    history: Sequence[str], target: str, target_id: int, items: Sequence[str], n: int
) -> list[str]:
    """LEAKY: the paper's seeding scheme, negatives seeded by the target's item id. Comparisons only."""
    rng = random.Random(target_id)
    excluded = set(history) | {target}
    out = rng.sample([t for t in items if t not in excluded], n - 1) + [target]
    rng.shuffle(out)
    return out


def distinct(items: Sequence[str]) -> list[str]:
    """The titles once each, in their first order: a repeated title would be drawn more often, and
    `draw_candidates` counts its pool as if none repeats (it would never stop drawing)."""
    return list(dict.fromkeys(items))


def redraw(samples: Sequence[Sample], items: Sequence[str], seed: int, epoch: int) -> list[Sample]:
    """Fresh candidate lists for one training epoch, same size as each sample's own list."""
    items = distinct(items)
    out = []
    for s in samples:
        rng = sample_rng(seed, "candidates", s.key, epoch)
        cands = draw_candidates(s.history, s.target, items, len(s.candidates), rng)
        out.append(Sample(s.history, cands, s.target, s.user, s.key))
    return out


def draw_negatives(sample: Sample, k: int, seed: int, epoch: int) -> list[str]:
    """K distinct non-target titles from the sample's own candidate list (the list the model sees)."""
    pool = [c for c in sample.candidates if c != sample.target]
    if len(pool) < k:
        raise ValueError(f"sample {sample.key} has {len(pool)} non-target candidates, fewer than K={k}")
    return sample_rng(seed, "negatives", sample.key, epoch).sample(pool, k)


NEGATIVE_SOURCES = ("uniform", "popular", "model")


def popular_negatives(sample: Sample, k: int, popularity: dict[str, int], seed: int, epoch: int) -> list[str]:
    """K distinct non-target titles of the sample's list, drawn without replacement with probability
    proportional to 1 + how often each is a training target (Efraimidis-Spirakis keys), seeded by sample
    and epoch: popular items, which a model tends to over-rank, are negatives more often."""
    pool = [c for c in sample.candidates if c != sample.target]
    if len(pool) < k:
        raise ValueError(f"sample {sample.key} has {len(pool)} non-target candidates, fewer than K={k}")
    rng = sample_rng(seed, "popular negatives", sample.key, epoch)
    keys = {c: rng.random() ** (1.0 / (1 + popularity.get(c, 0))) for c in pool}
    return sorted(pool, key=lambda c: -keys[c])[:k]


def popular_catalogue_negatives(
    sample: Sample, k: int, items: Sequence[str], cum_weights: Sequence[float], seed: int, epoch: int
) -> list[str]:
    """K distinct titles of the whole catalogue `items` outside the sample's history and target, each drawn with
    probability proportional to its weight (`cum_weights`: their running sums, 1 + how often each is a training
    target), seeded by sample and epoch: the next-item task's popular negatives, since its prompt shows no list."""
    excluded = set(sample.history) | {sample.target}
    if len(items) - len(excluded.intersection(items)) < k:
        raise ValueError(f"sample {sample.key} has fewer than K={k} catalogue items outside its history")
    rng = sample_rng(seed, "popular negatives", sample.key, epoch)
    out: list[str] = []
    while len(out) < k:  # rejection: the excluded titles are few next to the catalogue
        t = rng.choices(items, cum_weights=cum_weights)[0]
        if t not in excluded and t not in out:
            out.append(t)
    return out


def top_negatives(others: Sequence[str], scores: Sequence[float], k: int) -> list[int]:
    """Indices of the K highest-scored of `others` (the non-target candidates), ties by list position:
    the hard negatives a model itself would rank first."""
    return sorted(range(len(others)), key=lambda i: (-scores[i], i))[:k]


def require_redrawable(path: str, train: Sequence[Sample]) -> None:
    """Every epoch re-draws each sample's list from the training file's titles outside its history; a
    sample whose list is longer than that pool cannot be re-drawn."""
    items = set(catalogue(train))
    for s in train:
        pool = len(items - set(s.history) - {s.target})
        if pool < len(s.candidates) - 1:
            raise sample_error(
                path,
                s,
                "itemList",
                f"{len(s.candidates)} candidates, but only {pool} titles of the "
                "training file lie outside this history to re-draw them from; add --keep-candidates "
                "to train on the file's lists as they are",
            )


def require_negatives(path: str | Path, samples: Sequence[Sample], k: int) -> None:
    """Every sample (read from `path`) needs at least K non-target candidates to draw K negatives from."""
    for s in samples:
        if len(s.candidates) - 1 < k:
            raise sample_error(
                path,
                s,
                "itemList",
                f"{len(s.candidates) - 1} non-target candidates, fewer than the {k} negatives asked for (--negatives)",
            )


def validation_subset(valid: Sequence[Sample], n: int) -> list[Sample]:
    """`n` validation samples drawn at random across the file, in file order (0: all). Prepared files are
    grouped by user, so the first `n` rows are a handful of users; the draw's seed depends only on the
    file's size and `n`, so SFT, DPO and S-DPO runs of any seed select on the same rows."""
    if not n or n >= len(valid):
        return list(valid)
    chosen = sample_rng("validation subset", len(valid), n).sample(range(len(valid)), n)
    return [valid[i] for i in sorted(chosen)]
