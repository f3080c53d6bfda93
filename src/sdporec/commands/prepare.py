"""`sdporec prepare`: write train / valid / test samples (JSON Lines), the item list and a summary
(`PrepareConfig`, `run_prepare`).

Sources: `builtin` (the generated default data), `movielens-100k` (GroupLens files) and `csv` (your own
interaction log and item titles). Users are split 8:1:1 with a seeded shuffle (or, for `csv`,
leave-last-out in time); every position with enough history becomes a sample; the candidates are the
target plus items outside the history, drawn per sample (`--paper-seeding` seeds by the target's id,
which leaks the target and is for comparisons only). The splits themselves are `sdporec.data.prepare`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sdporec.commands.settings import setting
from sdporec.config import config_text, require_input
from sdporec.data.importers import (
    ML100K_URL,
    Interactions,
    download_movielens_100k,
    read_interaction_log,
    read_movielens_100k,
)
from sdporec.data.prepare import SPLITS, builtin_interactions, cold_items, make_splits
from sdporec.data.samples import Sample, validate_samples, write_samples
from sdporec.data.synthetic import WorldSpec
from sdporec.errors import require
from sdporec.files import atomic_write_text, output_set
from sdporec.outputs import claim_out_dir, require_apart
from sdporec.runs import PREPARE_CONFIG, PREPARE_SUMMARY, write_json

SOURCES = ("builtin", "movielens-100k", "csv")


@dataclass
class PrepareConfig:
    source: str = setting("builtin", "data source", choices=SOURCES, positional=True)
    out: str = setting("", "output directory for train.jsonl, valid.jsonl, test.jsonl, items.txt, prepare.json")
    raw: str = setting("", "movielens-100k: folder with u.data and u.item")
    download: bool = setting(False, "movielens-100k: fetch the archive from GroupLens into --raw and check SHA-256")
    interactions: str = setting("", "csv: interactions file (CSV, or TSV by extension)")
    items_file: str = setting("", "csv: items file with an item id and a title column")
    user_col: str = setting("user", "csv: user column")
    item_col: str = setting("item", "csv: item column (both files)")
    time_col: str = setting("timestamp", "csv: timestamp column (numbers)")
    title_col: str = setting("title", "csv: title column of the items file")
    rating_col: str = setting("", "csv: rating column (optional)")
    min_rating: float = setting(0.0, "csv: keep interactions rated at least this (with --rating-col)")
    delimiter: str = setting("", "csv: field delimiter (default: tab for .tsv, else comma)")
    kcore: int = setting(0, "keep only users and items with at least k interactions (0: no filter)")
    split: str = setting(
        "users",
        "users: users shuffled and cut 8:1:1; leave-last-out: each user's last item "
        "is test, the one before valid, the rest train",
        choices=("users", "leave-last-out"),
    )
    min_history: int = setting(3, "fewest history items a sample needs")
    max_history: int = setting(10, "most recent items kept as history")
    candidates: int = setting(20, "candidates per sample (target included)")
    cold_items: float = setting(
        0.0,
        "hold this seeded fraction of the items out of training entirely: no training sample names one, "
        "validation and test samples keep them (0: none)",
    )
    users: int = setting(800, "builtin: number of users")
    items: int = setting(300, "builtin: number of items")
    genres: int = setting(12, "builtin: number of item genres")
    seed: int = setting(0, "seed of the generated world, the user split and the candidate draws")
    paper_seeding: bool = setting(
        False,
        "LEAKY, for comparisons only: seed each sample's negatives by the "
        "target's item id as the paper does, so the list gives the target away",
    )
    url: str = setting(ML100K_URL, "movielens-100k --download: where the archive is (a mirror, or a file:// URL)")
    overwrite: bool = setting(False, "replace the files of an earlier prepare in OUT")

    def check(self) -> None:
        require(bool(self.out), "out", "required")
        require(self.source != "movielens-100k" or bool(self.raw), "raw", "required for movielens-100k")
        require(
            self.source != "csv" or bool(self.interactions and self.items_file),
            "interactions",
            "csv needs --interactions and --items-file",
        )
        require(self.users >= 10, "users", "must be at least 10 (users are split 8:1:1)")
        if self.source == "builtin":
            require(
                2 <= self.genres <= self.items // 10,
                "genres",
                "must be between 2 and items / 10 (each user likes 2 genres)",
            )
            require(
                self.items >= max(WorldSpec.max_len, self.candidates + self.max_history),
                "items",
                f"the built-in data needs at least {max(WorldSpec.max_len, self.candidates + self.max_history)} "
                f"items (histories of up to {WorldSpec.max_len} distinct items, and {self.candidates} candidates "
                f"outside {self.max_history} history items)",
            )
        require(1 <= self.min_history <= self.max_history, "min_history", "must be between 1 and max_history")
        require(self.candidates >= 2, "candidates", "must be at least 2")
        require(0 <= self.cold_items < 1, "cold_items", "must be a fraction from 0 up to (not including) 1")

    def resolve(self) -> None:
        if self.source == "csv":
            require_input(self.interactions, "interactions")
            require_input(self.items_file, "items_file")
        require(
            not (self.download and Path(self.raw).exists() and not Path(self.raw).is_dir()),
            "raw",
            f"{self.raw} is a file; --download needs a folder to write u.data and u.item into",
        )
        if self.out != "-":
            inputs = {"interactions": self.interactions, "items_file": self.items_file} if self.source == "csv" else {}
            inputs.update({"raw": self.raw} if self.source == "movielens-100k" else {})
            require_apart(self.out, inputs)
            claim_out_dir(self.out, PREPARED_FILES, self.overwrite)


PREPARED_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "items.txt", PREPARE_SUMMARY, PREPARE_CONFIG)


def load_interactions(cfg: PrepareConfig) -> Interactions:
    if cfg.source == "builtin":
        return builtin_interactions(cfg.users, cfg.items, cfg.genres, cfg.seed)
    if cfg.source == "movielens-100k":
        if cfg.download:
            download_movielens_100k(cfg.raw, cfg.url)
        return read_movielens_100k(cfg.raw)
    return read_interaction_log(
        cfg.interactions,
        cfg.items_file,
        cfg.user_col,
        cfg.item_col,
        cfg.time_col,
        cfg.rating_col,
        cfg.min_rating if cfg.rating_col else None,
        cfg.title_col,
        cfg.delimiter,
    )


def config_splits(inter: Interactions, cfg: PrepareConfig) -> dict[str, list[Sample]]:
    """`make_splits` with the config's split settings."""
    return make_splits(
        inter,
        cfg.seed,
        cfg.candidates,
        cfg.min_history,
        cfg.max_history,
        cfg.kcore,
        cfg.split,
        cfg.paper_seeding,
        cfg.cold_items,
    )


def run_prepare(cfg: PrepareConfig) -> dict:
    out = Path(cfg.out)
    inter = load_interactions(cfg)
    n_items = len(inter.item_ids)
    require(
        n_items >= cfg.candidates + cfg.max_history,
        "candidates",
        f"{cfg.candidates} candidates outside up to "
        f"{cfg.max_history} history items need at least {cfg.candidates + cfg.max_history} items; the data has "
        f"{n_items}",
    )
    splits = config_splits(inter, cfg)
    empty = [name for name in SPLITS if not splits[name]]
    require(
        not empty,
        "kcore" if cfg.kcore else "min_history",
        f"no samples in the {' and '.join(empty)} "
        f"split(s): too few users or too short histories are left (users: {len(inter.sequences)}; "
        f"kcore {cfg.kcore}, min_history {cfg.min_history})",
    )
    for name in SPLITS:
        validate_samples(splits[name], f"{cfg.source}:{name}")
    summary = {
        "source": cfg.source,
        "paper_seeding": cfg.paper_seeding,
        "interactions": sum(len(s) for s in inter.sequences.values()),
        "samples": {name: len(splits[name]) for name in SPLITS},
        "users": {name: len({s.user for s in splits[name]}) for name in SPLITS},
        "items": len(inter.item_ids),
        "renamed_titles": inter.renamed,
        "cold_items": sorted(cold_items(inter, cfg.cold_items, cfg.seed, cfg.kcore)),
        "config": asdict(cfg),
    }
    if inter.renamed:
        print(
            f"{len(inter.renamed)} titles are shared by several item ids and were made distinct, e.g. "
            + "; ".join(f"{new!r}" for new in list(inter.renamed)[:3])
        )
    with output_set(out, PREPARE_CONFIG) as stage:  # the files as one set, the config last
        for name in SPLITS:
            write_samples(stage / f"{name}.jsonl", splits[name])
        atomic_write_text(
            stage / "items.txt", "".join(t + "\n" for t in sorted(inter.item_ids, key=inter.item_ids.get))
        )
        write_json(stage / PREPARE_SUMMARY, summary)
        atomic_write_text(stage / PREPARE_CONFIG, config_text(cfg))
    return {k: v for k, v in summary.items() if k not in ("config", "renamed_titles", "cold_items")} | {
        "cold_items": len(summary["cold_items"])
    }
