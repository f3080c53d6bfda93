"""The samples `sdporec prepare` writes, in memory: interactions split into train / valid / test samples
(`make_splits`), and the built-in data's (`builtin_splits`). Users are split 8:1:1 with a seeded shuffle (or
leave-last-out in time); every position with enough history becomes a sample; the candidates are the target
plus items outside the history, drawn per sample (`paper_seeding` seeds by the target's id, which leaks the
target and is for comparisons only). The command (its config, the sources it reads and the files it writes)
is `sdporec.commands.prepare`.
"""

from __future__ import annotations

from sdporec.data.importers import Interactions, k_core
from sdporec.data.samples import Sample
from sdporec.data.synthetic import WorldSpec, generate_sequences, sequences_to_samples, split_users

SPLITS = ("train", "valid", "test")


def builtin_interactions(users: int, items: int, genres: int, seed: int = 0) -> Interactions:
    """The built-in data's generated interactions."""
    spec = WorldSpec(n_users=users, n_items=items, n_genres=genres, seed=seed)
    titles, sequences = generate_sequences(spec)
    return Interactions(sequences, {t: i for i, t in enumerate(titles)})


def builtin_splits(users: int, items: int, genres: int, seed: int = 0) -> dict[str, list[Sample]]:
    """The built-in data's samples in memory, exactly as `sdporec prepare builtin` writes them (its defaults)."""
    return make_splits(builtin_interactions(users, items, genres, seed), seed)


def make_splits(
    inter: Interactions,
    seed: int = 0,
    candidates: int = 20,
    min_history: int = 3,
    max_history: int = 10,
    kcore: int = 0,
    split: str = "users",
    paper_seeding: bool = False,
) -> dict[str, list[Sample]]:
    """Train / valid / test samples of `inter` (the defaults are `sdporec prepare`'s)."""
    seqs = k_core(inter.sequences, kcore) if kcore else inter.sequences
    items = sorted(inter.item_ids, key=inter.item_ids.get)
    ids = inter.item_ids if paper_seeding else None
    kw = dict(
        items=items, seed=seed, n_candidates=candidates, min_history=min_history, max_history=max_history, item_ids=ids
    )
    if split == "users":
        parts = split_users(list(seqs), seed)
        return {name: sequences_to_samples(seqs, users, split=name, **kw) for name, users in parts.items()}
    users = sorted(seqs)
    return {
        "train": sequences_to_samples({u: s[:-2] for u, s in seqs.items()}, users, split="train", **kw),
        "valid": sequences_to_samples({u: s[:-1] for u, s in seqs.items()}, users, split="valid", only_last=True, **kw),
        "test": sequences_to_samples(seqs, users, split="test", only_last=True, **kw),
    }
