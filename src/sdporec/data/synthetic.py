"""Built-in default data: seeded sequential interactions with real structure, and samples built from them.

Items (artists with made-up names) belong to genres; popularity is Zipf-skewed; each user has a taste over
a few genres; and listening continues sequentially: after an item, users often move to one of its few
"successors" in the same genre. A model that reads the history can use the taste and the transitions;
popularity alone cannot, so a trained recommender must beat popularity clearly.
`sequences_to_samples` is the generic step from per-user sequences to samples, shared with importers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sdporec.data.candidates import distinct, draw_candidates, paper_seeded_candidates, sample_rng
from sdporec.data.samples import Sample

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "k", "l", "m", "n", "p", "r", "s", "st", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "x", "th"]
_NOUNS = [
    "Wolves",
    "Lanterns",
    "Echoes",
    "Rivers",
    "Machines",
    "Saints",
    "Owls",
    "Tides",
    "Ghosts",
    "Comets",
    "Harbors",
    "Orchids",
    "Engines",
    "Foxes",
    "Mirrors",
    "Satellites",
]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ).capitalize()


def artist_names(n: int, rng: random.Random) -> list[str]:
    """n distinct artist-like names: 'Velora Kest', 'The Brisen Owls', 'Drousa'."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        form = rng.random()
        if form < 0.5:
            name = f"{_word(rng, rng.randint(1, 2))} {_word(rng, rng.randint(1, 2))}"
        elif form < 0.8:
            name = f"The {_word(rng, 2)} {rng.choice(_NOUNS)}"
        else:
            name = _word(rng, 3)
        if name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names


@dataclass
class WorldSpec:
    """Sizes and strengths of the generated world. Defaults train on 2 CPU cores in minutes."""

    n_users: int = 800
    n_items: int = 300
    n_genres: int = 12
    min_len: int = 12
    max_len: int = 30
    genres_per_user: int = 2
    p_successor: float = 0.6  # chance that the next item continues from the last one
    zipf: float = 0.9  # popularity skew: weight of the item of popularity rank r is 1/r^zipf
    seed: int = 0


def generate_sequences(spec: WorldSpec) -> tuple[list[str], dict[str, list[str]]]:
    """(item titles, user id -> titles in time order). Users never repeat an item."""
    rng = random.Random(f"world:{spec.seed}")
    items = artist_names(spec.n_items, rng)
    genre = [i % spec.n_genres for i in range(spec.n_items)]
    rng.shuffle(genre)
    rank = list(range(1, spec.n_items + 1))
    rng.shuffle(rank)
    weight = [1.0 / r**spec.zipf for r in rank]
    by_genre = [[i for i in range(spec.n_items) if genre[i] == g] for g in range(spec.n_genres)]
    # Each item leads to 3 successors in its genre, favouring popular ones.
    successors = []
    for i in range(spec.n_items):
        pool = [j for j in by_genre[genre[i]] if j != i]
        successors.append(_weighted_distinct(rng, pool, [weight[j] for j in pool], 3))
    users: dict[str, list[str]] = {}
    for u in range(spec.n_users):
        tastes = rng.sample(range(spec.n_genres), spec.genres_per_user)
        length = rng.randint(spec.min_len, spec.max_len)
        seq: list[int] = []
        seen: set[int] = set()
        while len(seq) < length:
            if seq and rng.random() < spec.p_successor:
                options = [j for j in successors[seq[-1]] if j not in seen]
                nxt = options[0] if options else None
            else:
                nxt = None
            if nxt is None:
                g = rng.choice(tastes) if rng.random() < 0.85 else rng.randrange(spec.n_genres)
                # A user who has heard the whole genre moves on to anything unheard.
                pool = [j for j in by_genre[g] if j not in seen] or [j for j in range(spec.n_items) if j not in seen]
                nxt = rng.choices(pool, [weight[j] for j in pool])[0]
            seq.append(nxt)
            seen.add(nxt)
        users[f"u{u}"] = [items[i] for i in seq]
    return items, users


def _weighted_distinct(rng: random.Random, pool: list[int], weights: list[float], k: int) -> list[int]:
    pool, weights = list(pool), list(weights)
    out = []
    for _ in range(min(k, len(pool))):
        j = rng.choices(range(len(pool)), weights)[0]
        out.append(pool.pop(j))
        weights.pop(j)
    return out


def split_users(users: Sequence[str], seed: int, ratios=(0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Users shuffled with a seed, then cut 8:1:1 (by default) into train / valid / test."""
    order = sorted(users)
    random.Random(f"split:{seed}").shuffle(order)
    n_train = round(len(order) * ratios[0])
    n_valid = round(len(order) * ratios[1])
    return {"train": order[:n_train], "valid": order[n_train : n_train + n_valid], "test": order[n_train + n_valid :]}


def sequences_to_samples(
    sequences: dict[str, list[str]],
    user_ids: Sequence[str],
    items: Sequence[str],
    split: str,
    seed: int,
    n_candidates: int = 20,
    min_history: int = 3,
    max_history: int = 10,
    item_ids: dict[str, int] | None = None,
    only_last: bool = False,
) -> list[Sample]:
    """One sample per position with at least `min_history` earlier items (only the last position with
    `only_last`); history = the most recent `max_history`. Candidates are seeded per sample, or by the
    target's id when `item_ids` is given (the paper's leaky scheme)."""
    out: list[Sample] = []
    items = distinct(items)
    for user in user_ids:
        seq = sequences[user]
        for t in range(max(min_history, len(seq) - 1) if only_last else min_history, len(seq)):
            history, target = seq[max(0, t - max_history) : t], seq[t]
            key = f"{split}:{len(out)}"
            if item_ids is None:
                cands = draw_candidates(history, target, items, n_candidates, sample_rng(seed, "prepare", key))
            else:
                cands = paper_seeded_candidates(history, target, item_ids[target], items, n_candidates)
            out.append(Sample(list(history), cands, target, user, key))
    return out
