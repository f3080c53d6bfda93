"""Classical baselines, trained on the training split and scored through the same `evaluate` path as the
language models, on the same candidate lists.

- popularity: how often a candidate is a training target.
- item counts: how often the candidate followed the history's last item (transition), then how often it
  followed any history item (co-occurrence), then popularity, as one score in that order of weight.
- item-kNN: a candidate's cosine with the history in the item vectors of `models.item_rows.cooccurrence_rows`
  (a rank-64 factoring of the positive PMI of items sharing a training sequence), the vectors `sft --item-init cooc`
  starts item tokens from: how far co-occurrence alone goes, with no training.
- SASRec and GRU4Rec: see `baseline_models.py`.

The `sdporec baseline` command is `sdporec.commands.baseline`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from sdporec.data.candidates import catalogue
from sdporec.data.samples import Sample
from sdporec.evaluation.scoring import Scorer
from sdporec.models.item_rows import COOC_DIM, cooccurrence_rows


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
            out.append(
                [
                    transition_weight * last[c] + cooccurrence_weight * sum(h[c] for h in hist) + tie * pop[c]
                    for c in s.candidates
                ]
            )
        return out

    return score


def item_knn_scorer(train: Sequence[Sample], dim: int = COOC_DIM) -> Scorer:
    """score = cosine of the candidate's co-occurrence vector with the mean of the history items' unit vectors,
    plus popularity scaled to break ties only (items that share no training sequence have no vector)."""
    titles = catalogue(train)
    index = {t: i for i, t in enumerate(titles)}
    vectors = torch.nn.functional.normalize(
        cooccurrence_rows([s.history + [s.target] for s in train], titles, dim), dim=-1
    )
    pop = Counter(s.target for s in train)
    tie = 1e-6 / (1 + max(pop.values(), default=0))

    def score(samples: Sequence[Sample]) -> list[list[float]]:
        out = []
        for s in samples:
            known = [index[h] for h in s.history if h in index]
            centre = (
                torch.nn.functional.normalize(vectors[known].mean(0), dim=0)
                if known
                else torch.zeros(vectors.shape[1], dtype=vectors.dtype)
            )
            out.append(
                [(float(vectors[index[c]] @ centre) if c in index else 0.0) + tie * pop[c] for c in s.candidates]
            )
        return out

    return score
