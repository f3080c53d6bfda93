"""`sdporec prepare`: write train / valid / test samples (JSON Lines) and the item list."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import opt, require, save_config
from .samples import atomic_write_text, write_samples
from .synthetic import WorldSpec, builtin_splits

SPLITS = ("train", "valid", "test")


@dataclass
class PrepareConfig:
    source: str = opt("builtin", "data source: the built-in generator of sequential interactions",
                      choices=("builtin",), positional=True)
    out: str = opt("", "output directory for train.jsonl, valid.jsonl, test.jsonl and items.txt")
    users: int = opt(800, "built-in: number of users")
    items: int = opt(300, "built-in: number of items")
    genres: int = opt(12, "built-in: number of item genres")
    seed: int = opt(0, "seed of the generated world, the user split and the candidate draws")
    paper_seeding: bool = opt(False, "LEAKY, for comparisons only: seed each sample's negatives by the "
                              "target's item id as the paper does, so the list gives the target away")

    def validate(self) -> None:
        require(bool(self.out), "out", "required")
        require(self.users >= 10, "users", "must be at least 10 (users are split 8:1:1)")
        require(self.items >= 40, "items", "must be at least 40 (20 candidates outside a 10-item history)")
        require(1 <= self.genres <= self.items // 10, "genres", "must be between 1 and items / 10")


def run_prepare(cfg: PrepareConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = WorldSpec(n_users=cfg.users, n_items=cfg.items, n_genres=cfg.genres, seed=cfg.seed)
    items, splits = builtin_splits(spec, paper_seeding=cfg.paper_seeding)
    for name in SPLITS:
        write_samples(out / f"{name}.jsonl", splits[name])
    atomic_write_text(out / "items.txt", "".join(t + "\n" for t in items))
    summary = {"source": cfg.source, "spec": asdict(spec), "paper_seeding": cfg.paper_seeding,
               "samples": {name: len(splits[name]) for name in SPLITS},
               "users": {name: len({s.user for s in splits[name]}) for name in SPLITS}}
    save_config(cfg, out, "prepare_config.yaml")
    atomic_write_text(out / "prepare.json", json.dumps(summary, indent=2) + "\n")
    return summary
