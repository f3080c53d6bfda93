"""Classical baselines, trained on the training split and scored through the same `evaluate` path as the
language models, on the same candidate lists.

- popularity: how often a candidate is a training target.
- item counts: how often the candidate followed the history's last item (transition), then how often it
  followed any history item (co-occurrence), then popularity, as one score in that order of weight.
- item-kNN: a candidate's cosine with the history in the item vectors of `models.item_rows.cooccurrence_rows`
  (a rank-64 factoring of the positive PMI of items sharing a training sequence), the vectors `sft --item-init cooc`
  starts item tokens from: how far co-occurrence alone goes, with no training.
- SASRec and GRU4Rec: see `baseline_models.py`.

Each is an object that scores candidate lists when called (a `Scorer`) and the whole catalogue through its
`catalogue` method (a `CatalogueScorer`, `evaluation/catalogue.py`), by the same score of an item.

The `sdporec baseline` command is `sdporec.commands.baseline`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from sdporec.data.candidates import catalogue
from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue
from sdporec.models.item_rows import COOC_DIM, cooccurrence_rows


class Popularity:
    """Scores an item by how often it is a training target (training targets only: no peeking at candidate
    lists, which would measure the sampler rather than the users)."""

    def __init__(self, train: Sequence[Sample]):
        self.counts = Counter(s.target for s in train)

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        return [[float(self.counts[c]) for c in s.candidates] for s in samples]

    def catalogue(self, samples: Sequence[Sample], items: Catalogue) -> torch.Tensor:
        row = torch.tensor([float(self.counts[t]) for t in items.titles], dtype=torch.float64)
        return row.expand(len(samples), -1)


class ItemCounts:
    """score = w_t * transitions(last item -> c) + w_c * sum over history items h of cooccurrences(h -> c)
    + a popularity term too small to do more than break ties. The weights (1, 0.1) were chosen on LastFM
    resampled validation among (1, 0.03 / 0.1 / 0.3 / 1) and (0, 1): 0.668 against 0.626-0.668."""

    def __init__(self, train: Sequence[Sample], transition_weight: float = 1.0, cooccurrence_weight: float = 0.1):
        self.weights = (transition_weight, cooccurrence_weight)
        self.pop = Counter(s.target for s in train)
        self.trans: dict[str, Counter] = defaultdict(Counter)
        self.cooc: dict[str, Counter] = defaultdict(Counter)
        for s in train:
            self.trans[s.history[-1]][s.target] += 1
            for h in set(s.history):
                self.cooc[h][s.target] += 1
        # Any non-zero difference of the first two terms is a multiple of min(w_t, w_c) (counts are integers),
        # so popularity scaled below that only breaks ties.
        self.tie = 0.5 * min(self.weights) / (1 + max(self.pop.values(), default=0))

    def _counts(self, sample: Sample) -> tuple[Counter, list[Counter]]:
        last = self.trans.get(sample.history[-1], Counter())
        return last, [self.cooc[h] for h in set(sample.history) if h in self.cooc]

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        (w_t, w_c), out = self.weights, []
        for s in samples:
            last, hist = self._counts(s)
            out.append([w_t * last[c] + w_c * sum(h[c] for h in hist) + self.tie * self.pop[c] for c in s.candidates])
        return out

    def catalogue(self, samples: Sequence[Sample], items: Catalogue) -> torch.Tensor:
        """The same sums as a call's, as vectors over the catalogue (only the counted items are visited)."""
        (w_t, w_c), n = self.weights, len(items)
        pop = self._vector(self.pop, items)
        out = torch.empty(len(samples), n, dtype=torch.float64)
        for i, s in enumerate(samples):
            last, hist = self._counts(s)
            together = sum((self._vector(h, items) for h in hist), torch.zeros(n, dtype=torch.float64))
            out[i] = w_t * self._vector(last, items) + w_c * together + self.tie * pop
        return out

    @staticmethod
    def _vector(counts: Counter, items: Catalogue) -> torch.Tensor:
        v = torch.zeros(len(items), dtype=torch.float64)
        known = [(items.index[t], c) for t, c in counts.items() if t in items.index]
        if known:
            where, values = zip(*known)
            v[list(where)] = torch.tensor(values, dtype=torch.float64)
        return v


class ItemKNN:
    """score = cosine of the item's co-occurrence vector with the mean of the history items' unit vectors, plus
    popularity scaled to break ties only (items that share no training sequence have no vector: 0)."""

    def __init__(self, train: Sequence[Sample], dim: int = COOC_DIM):
        titles = catalogue(train)
        self.index = {t: i for i, t in enumerate(titles)}
        self.vectors = torch.nn.functional.normalize(
            cooccurrence_rows([s.history + [s.target] for s in train], titles, dim), dim=-1
        )
        self.pop = Counter(s.target for s in train)
        self.tie = 1e-6 / (1 + max(self.pop.values(), default=0))

    def _centre(self, sample: Sample) -> torch.Tensor:
        known = [self.index[h] for h in sample.history if h in self.index]
        if not known:
            return torch.zeros(self.vectors.shape[1], dtype=self.vectors.dtype)
        return torch.nn.functional.normalize(self.vectors[known].mean(0), dim=0)

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        out = []
        for s in samples:
            centre = self._centre(s)
            out.append(
                [
                    (float(self.vectors[self.index[c]] @ centre) if c in self.index else 0.0) + self.tie * self.pop[c]
                    for c in s.candidates
                ]
            )
        return out

    def catalogue(self, samples: Sequence[Sample], items: Catalogue) -> torch.Tensor:
        known = [(j, self.index[t]) for j, t in enumerate(items.titles) if t in self.index]
        columns, rows = (list(x) for x in zip(*known)) if known else ([], [])
        pop = torch.tensor([self.tie * self.pop[t] for t in items.titles], dtype=torch.float64)
        out = pop.repeat(len(samples), 1)
        if rows:
            centres = torch.stack([self._centre(s) for s in samples])  # (B, dim)
            out[:, columns] += (centres @ self.vectors[rows].T).double()
        return out
