"""`sdporec baseline`: a classical baseline trained and evaluated on the same candidates, over the whole catalogue,
or, trained once, both (`BaselineConfig`, `run_baseline`); the baselines are `sdporec.evaluation.baselines` and
`baseline_models`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sdporec.commands.groups import progress_setting
from sdporec.commands.settings import setting
from sdporec.config import config_text, require_input
from sdporec.data.samples import read_samples
from sdporec.errors import require
from sdporec.evaluation.baselines import ItemCounts, ItemKNN, Popularity
from sdporec.evaluation.catalogue import CANDIDATES, Catalogue, evaluate_catalogue
from sdporec.evaluation.evaluate import evaluate_ranking, write_results
from sdporec.files import atomic_write_text, output_set
from sdporec.outputs import claim_out_dir, clear_outputs, require_apart
from sdporec.runs import CONFIG, EVALUATION_FILES, METRICS, PREDICTIONS

BASELINES = ("popularity", "item-counts", "item-knn", "sasrec", "gru4rec")
# `--candidates both`: the model trained once, each protocol's evaluation folder inside OUT under its name.
BOTH = CANDIDATES


@dataclass
class BaselineConfig:
    name: str = setting("item-counts", "which baseline", choices=BASELINES, positional=True)
    train: str = setting("", "training samples")
    eval: str = setting("", "samples to evaluate")
    valid: str = setting("", "sasrec/gru4rec: validation samples for early stopping (default: none, fixed epochs)")
    out: str = setting("", "output directory for metrics.json and predictions.jsonl")
    candidates: str = setting(
        "list",
        "list: rank each sample's own candidate list (the paper's 20); all: rank the whole catalogue but the "
        "history (HR and NDCG at 1, 5, 10, 20, and MRR); both: train once, then each, in OUT/list and OUT/all",
        choices=(*CANDIDATES, "both"),
    )
    catalogue: str = setting(
        "",
        "with --candidates all or both: the catalogue file (prepare's items.txt); default: every title of the samples",
    )
    hidden: int = setting(64, "sasrec/gru4rec: embedding and hidden size")
    layers: int = setting(2, "sasrec/gru4rec: layers")
    heads: int = setting(2, "sasrec: attention heads")
    dropout: float = setting(0.2, "sasrec/gru4rec: dropout")
    epochs: int = setting(30, "sasrec/gru4rec: most epochs")
    patience: int = setting(3, "sasrec/gru4rec: stop after this many epochs without a better validation HR@1")
    lr: float = setting(1e-3, "sasrec/gru4rec: learning rate")
    batch_size: int = setting(256, "sasrec/gru4rec: sequences per batch")
    seed: int = setting(0, "seed")
    progress: bool = progress_setting()
    overwrite: bool = setting(False, "replace the results of an earlier run in OUT")

    def check(self) -> None:
        for name in ("train", "eval", "out"):
            require(bool(getattr(self, name)), name, "required")
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")
        require(
            not self.catalogue or self.candidates != "list", "catalogue", "is read only with --candidates all or both"
        )

    def resolve(self) -> None:
        for name in ("train", "eval", "valid", "catalogue"):
            require_input(getattr(self, name), name)
        require_apart(self.out, {name: getattr(self, name) for name in ("train", "eval", "valid", "catalogue")})
        # Either kind of earlier run in OUT (one folder's files, or both protocols' folders) is replaced alike.
        claim_out_dir(self.out, (*EVALUATION_FILES, *BOTH), self.overwrite)


def run_baseline(cfg: BaselineConfig) -> dict:
    """Train the baseline once and evaluate it on what `--candidates` asks; with `both`, returns each protocol's
    results under its name."""
    started = time.time()
    train, samples = read_samples(cfg.train, "train"), read_samples(cfg.eval, "eval")
    valid = read_samples(cfg.valid, "valid") if cfg.valid else []
    items = None
    if cfg.candidates != "list":  # checked before any training
        items = Catalogue.read(cfg.catalogue) if cfg.catalogue else Catalogue.of_samples(train, valid, samples)
        items.require_known(samples, cfg.eval)
    scorer, info = build_baseline(cfg, train, valid, samples)
    evaluated = {}
    if cfg.candidates != "all":
        evaluated["list"] = (*evaluate_ranking(scorer, samples), {})
    if items is not None:
        metrics, rows = evaluate_catalogue(scorer.catalogue, samples, items, seed=cfg.seed)
        evaluated["all"] = (metrics, rows, {"candidates": "all", "catalogue": len(items)})
    # The seconds of training and every evaluation asked, in each folder.
    extra = {"protocol": "ranking", "model": cfg.name, "data": cfg.eval, "seconds": round(time.time() - started, 1)}
    described = {name: (metrics, rows, {**extra, **more, **info}) for name, (metrics, rows, more) in evaluated.items()}
    config = config_text(cfg)
    if cfg.candidates == "both":
        with output_set(cfg.out, CONFIG) as stage:  # both folders, or neither
            for name, (metrics, rows, described_as) in described.items():
                write_results(stage / name, metrics, rows, described_as, config)
            atomic_write_text(stage / CONFIG, config)
        clear_outputs(cfg.out, (METRICS, PREDICTIONS))
    else:
        write_results(cfg.out, *described[cfg.candidates], config)
        clear_outputs(cfg.out, BOTH)
    out = {name: {**metrics, **described_as} for name, (metrics, _, described_as) in described.items()}
    out = out if cfg.candidates == "both" else out[cfg.candidates]
    print(json.dumps(out, indent=2))
    return out


def build_baseline(cfg: BaselineConfig, train: list, valid: list, samples: list) -> tuple[object, dict]:
    """The baseline `cfg` names, trained where it trains, and what its training recorded."""
    if cfg.name == "popularity":
        return Popularity(train), {}
    if cfg.name == "item-counts":
        return ItemCounts(train), {}
    if cfg.name == "item-knn":
        return ItemKNN(train), {}
    from sdporec.evaluation.baseline_models import SequentialConfig, train_sequential

    scfg = SequentialConfig(
        kind=cfg.name,
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        dropout=cfg.dropout,
        epochs=cfg.epochs,
        patience=cfg.patience,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    return train_sequential(scfg, train, valid, extra_titles=samples)
