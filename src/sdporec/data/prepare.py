"""The samples `sdporec prepare` writes, in memory: interactions split into train / valid / test samples
(`make_splits`), and the built-in data's (`builtin_splits`). Users are split 8:1:1 with a seeded shuffle (or
leave-last-out in time); every position with enough history becomes a sample; the candidates are the target
plus items outside the history, drawn per sample (`paper_seeding` seeds by the target's id, which leaks the
target and is for comparisons only). With `cold` > 0 a seeded fraction of the items is held out of training
entirely (`cold_items`): training sequences lose them, so no training sample names one (history, target or
candidate), while validation and test samples keep them. The command (its config, the sources it reads and the
files it writes) is `sdporec.commands.prepare`.
"""

from __future__ import annotations

from sdporec.data.candidates import sample_rng
from sdporec.data.importers import Interactions, k_core
from sdporec.data.samples import Sample
from sdporec.data.synthetic import WorldSpec, generate_sequences, sequences_to_samples, split_users
from sdporec.errors import require

SPLITS = ("train", "valid", "test")


def builtin_interactions(users: int, items: int, genres: int, seed: int = 0) -> Interactions:
    """The built-in data's generated interactions."""
    spec = WorldSpec(n_users=users, n_items=items, n_genres=genres, seed=seed)
    titles, sequences = generate_sequences(spec)
    return Interactions(sequences, {t: i for i, t in enumerate(titles)})


def builtin_splits(users: int, items: int, genres: int, seed: int = 0) -> dict[str, list[Sample]]:
    """The built-in data's samples in memory, exactly as `sdporec prepare builtin` writes them (its defaults)."""
    return make_splits(builtin_interactions(users, items, genres, seed), seed)


def cold_items(inter: Interactions, fraction: float, seed: int, kcore: int = 0) -> set[str]:
    """A seeded `fraction` of the items that occur (after the k-core filter), rounded, at least one when the
    fraction is above 0: the items to hold out of training."""
    if fraction <= 0:
        return set()
    seqs = k_core(inter.sequences, kcore) if kcore else inter.sequences
    present = sorted({i for s in seqs.values() for i in s})
    return set(sample_rng(seed, "cold-items").sample(present, max(1, round(len(present) * fraction))))


def make_splits(
    inter: Interactions,
    seed: int = 0,
    candidates: int = 20,
    min_history: int = 3,
    max_history: int = 10,
    kcore: int = 0,
    split: str = "users",
    paper_seeding: bool = False,
    cold: float = 0.0,
) -> dict[str, list[Sample]]:
    """Train / valid / test samples of `inter` (the defaults are `sdporec prepare`'s)."""
    seqs = k_core(inter.sequences, kcore) if kcore else inter.sequences
    items = sorted(inter.item_ids, key=inter.item_ids.get)
    held = cold_items(inter, cold, seed, kcore)
    ids = inter.item_ids if paper_seeding else None
    kw = dict(seed=seed, n_candidates=candidates, min_history=min_history, max_history=max_history, item_ids=ids)
    warm = dict(kw, items=[i for i in items if i not in held])  # training candidates: never a cold item
    kw["items"] = items
    if split == "users":
        parts = split_users(list(seqs), seed)
        return {
            name: sequences_to_samples(
                _without({u: seqs[u] for u in users}, held) if name == "train" else seqs,
                users,
                split=name,
                **(warm if name == "train" else kw),
            )
            for name, users in parts.items()
        }
    users = sorted(seqs)
    train = _without({u: s[:-2] for u, s in seqs.items()}, held)
    return {
        "train": sequences_to_samples(train, users, split="train", **warm),
        "valid": sequences_to_samples({u: s[:-1] for u, s in seqs.items()}, users, split="valid", only_last=True, **kw),
        "test": sequences_to_samples(seqs, users, split="test", only_last=True, **kw),
    }


def _without(seqs: dict[str, list[str]], held: set[str]) -> dict[str, list[str]]:
    """The sequences without the held-out items; a user left with none is a setting error."""
    if not held:
        return seqs
    kept = {u: [i for i in s if i not in held] for u, s in seqs.items()}
    empty = next((u for u in seqs if seqs[u] and not kept[u]), None)
    require(
        empty is None,
        "cold_items",
        f"holding {len(held)} items out of training leaves user {empty} with no training items: use a smaller fraction",
    )
    return kept
