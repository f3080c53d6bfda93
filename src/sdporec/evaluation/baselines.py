"""Classical baselines, trained on the training split and scored through the same `evaluate` path as the
language models, on the same candidate lists.

- popularity: how often a candidate is a training target.
- item counts: how often the candidate followed the history's last item (transition), then how often it
  followed any history item (co-occurrence), then popularity, as one score in that order of weight.
- item-kNN: item-based collaborative filtering (Sarwar et al., WWW 2001; Deshpande and Karypis, TOIS 2004): the
  sum of a candidate's cosine similarities to the history's items, two items' cosine taken over the training
  sequences (each sample's history and target) that hold them.
- SASRec and GRU4Rec: see `baseline_models.py`.

Each is an object that scores candidate lists when called (a `Scorer`) and the whole catalogue through its
`catalogue` method (a `CatalogueScorer`, `evaluation/catalogue.py`), by the same score of an item.

The `sdporec baseline` command is `sdporec.commands.baseline`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue


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
        pop = _vector(self.pop, items)
        out = torch.empty(len(samples), n, dtype=torch.float64)
        for i, s in enumerate(samples):
            last, hist = self._counts(s)
            together = sum((_vector(h, items) for h in hist), torch.zeros(n, dtype=torch.float64))
            out[i] = w_t * _vector(last, items) + w_c * together + self.tie * pop
        return out


class ItemKNN:
    """score = the sum over the history's distinct items h of cos(h, c), where cos(h, c) = (training sequences that
    hold both) / sqrt(sequences that hold h x sequences that hold c), a sequence being a training sample's history
    and target; every item is a neighbour (no k cut-off: on 20 candidates and on the catalogue alike), and
    popularity, scaled below any cosine difference that matters, breaks ties only. An item that shares no training
    sequence with the history scores its tie-breaker alone."""

    def __init__(self, train: Sequence[Sample]):
        together: dict[str, Counter] = defaultdict(Counter)
        held: Counter = Counter()
        for s in train:
            items = set(s.history) | {s.target}
            held.update(items)
            for a in items:
                together[a].update(items - {a})
        self.similar = {
            a: Counter({b: n / (held[a] * held[b]) ** 0.5 for b, n in others.items()}) for a, others in together.items()
        }
        self.pop = Counter(s.target for s in train)
        self.tie = 1e-6 / (1 + max(self.pop.values(), default=0))

    def _neighbours(self, sample: Sample) -> list[Counter]:
        return [self.similar[h] for h in dict.fromkeys(sample.history) if h in self.similar]

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        out = []
        for s in samples:
            near = self._neighbours(s)
            out.append([sum(h[c] for h in near) + self.tie * self.pop[c] for c in s.candidates])
        return out

    def catalogue(self, samples: Sequence[Sample], items: Catalogue) -> torch.Tensor:
        """The same sums as a call's, as vectors over the catalogue (only each history item's neighbours)."""
        pop = _vector(self.pop, items)
        out = torch.empty(len(samples), len(items), dtype=torch.float64)
        for i, s in enumerate(samples):
            out[i] = sum((_vector(h, items) for h in self._neighbours(s)), torch.zeros(len(items), dtype=torch.float64))
            out[i] += self.tie * pop
        return out


def _vector(counts: Counter, items: Catalogue) -> torch.Tensor:
    """`counts` (title -> number) as a vector over the catalogue's items (0 where absent)."""
    v = torch.zeros(len(items), dtype=torch.float64)
    known = [(items.index[t], c) for t, c in counts.items() if t in items.index]
    if known:
        where, values = zip(*known)
        v[list(where)] = torch.tensor(values, dtype=torch.float64)
    return v
