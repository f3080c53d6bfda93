"""Classical baselines, trained on the training split and scored through the same `evaluate` path as the
language models, on the same candidate lists.

- popularity: how often a candidate is a training target.
- item counts: how often the candidate followed the history's last item (transition), then how often it
  followed any history item (co-occurrence), then popularity, as one score in that order of weight.
- SASRec and GRU4Rec: see `sequential.py`.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sdporec.config import require_input, save_config, setting
from sdporec.data.samples import Sample, read_samples
from sdporec.errors import require
from sdporec.evaluation.evaluate import RESULT_FILES, Scorer, evaluate_ranking, write_results
from sdporec.outputs import claim_out_dir

BASELINES = ("popularity", "item-counts", "sasrec", "gru4rec")


def popularity_scorer(train: Sequence[Sample]) -> Scorer:
    """Scores a candidate by how often it is a training target (training targets only: no peeking at
    candidate lists, which would measure the sampler rather than the users)."""
    counts = Counter(s.target for s in train)

    def score(samples: Sequence[Sample]) -> list[list[float]]:
        return [[float(counts[c]) for c in s.candidates] for s in samples]
    return score


def item_count_scorer(
    train: Sequence[Sample], transition_weight: float = 1.0, cooccurrence_weight: float = 0.1
) -> Scorer:
    """score = w_t * transitions(last item -> c) + w_c * sum over history items h of cooccurrences(h -> c)
    + a popularity term too small to do more than break ties. The weights (1, 0.1) were chosen on LastFM
    resampled validation among (1, 0.03 / 0.1 / 0.3 / 1) and (0, 1): 0.668 against 0.626-0.668."""
    pop = Counter(s.target for s in train)
    trans: dict[str, Counter] = defaultdict(Counter)
    cooc: dict[str, Counter] = defaultdict(Counter)
    for s in train:
        trans[s.history[-1]][s.target] += 1
        for h in set(s.history):
            cooc[h][s.target] += 1
    # Any non-zero difference of the first two terms is a multiple of min(w_t, w_c) (counts are integers),
    # so popularity scaled below that only breaks ties.
    tie = 0.5 * min(transition_weight, cooccurrence_weight) / (1 + max(pop.values(), default=0))

    def score(samples: Sequence[Sample]) -> list[list[float]]:
        out = []
        for s in samples:
            last, hist = trans.get(s.history[-1], Counter()), [cooc[h] for h in set(s.history) if h in cooc]
            out.append([transition_weight * last[c] + cooccurrence_weight * sum(h[c] for h in hist) + tie * pop[c]
                        for c in s.candidates])
        return out
    return score


@dataclass
class BaselineConfig:
    name: str = setting("item-counts", "which baseline", choices=BASELINES, positional=True)
    train: str = setting("", "training samples")
    eval: str = setting("", "samples to evaluate")
    valid: str = setting("", "sasrec/gru4rec: validation samples for early stopping (default: none, fixed epochs)")
    out: str = setting("", "output directory for metrics.json and predictions.jsonl")
    hidden: int = setting(64, "sasrec/gru4rec: embedding and hidden size")
    layers: int = setting(2, "sasrec/gru4rec: layers")
    heads: int = setting(2, "sasrec: attention heads")
    dropout: float = setting(0.2, "sasrec/gru4rec: dropout")
    epochs: int = setting(30, "sasrec/gru4rec: most epochs")
    patience: int = setting(3, "sasrec/gru4rec: stop after this many epochs without a better validation HR@1")
    lr: float = setting(1e-3, "sasrec/gru4rec: learning rate")
    batch_size: int = setting(256, "sasrec/gru4rec: sequences per batch")
    seed: int = setting(0, "seed")
    progress: bool = setting(True, "show progress bars")
    overwrite: bool = setting(False, "replace the results of an earlier run in OUT")

    def validate(self) -> None:
        for name in ("train", "eval", "out"):
            require(bool(getattr(self, name)), name, "required")
        for name in ("train", "eval", "valid"):
            require_input(getattr(self, name), name)
        claim_out_dir(self.out, RESULT_FILES, self.overwrite)
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")


def run_baseline(cfg: BaselineConfig) -> dict:
    started = time.time()
    train, samples = read_samples(cfg.train, "train"), read_samples(cfg.eval, "eval")
    if cfg.name == "popularity":
        scorer, info = popularity_scorer(train), {}
    elif cfg.name == "item-counts":
        scorer, info = item_count_scorer(train), {}
    else:
        from sdporec.evaluation.baseline_models import SequentialConfig, train_sequential

        valid = read_samples(cfg.valid, "valid") if cfg.valid else []
        scfg = SequentialConfig(kind=cfg.name, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                                dropout=cfg.dropout, epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr,
                                batch_size=cfg.batch_size, seed=cfg.seed, progress=cfg.progress)
        scorer, info = train_sequential(scfg, train, valid, extra_titles=samples)
    metrics, rows = evaluate_ranking(scorer, samples)
    extra = {"protocol": "ranking", "model": cfg.name, "data": cfg.eval, "seconds": round(time.time() - started, 1),
             **info}
    save_config(cfg, cfg.out)
    write_results(cfg.out, metrics, rows, extra)
    print(json.dumps({**metrics, **extra}, indent=2))
    return {**metrics, **extra}
