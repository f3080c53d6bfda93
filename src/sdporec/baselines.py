"""Classical baselines, scored through the same `evaluate` path as the language models."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from .evaluate import Scorer
from .samples import Sample


def popularity_scorer(train: Sequence[Sample]) -> Scorer:
    """Scores a candidate by how often it is a training target (training targets only: no peeking at
    candidate lists, which would measure the sampler rather than the users)."""
    counts = Counter(s.target for s in train)

    def score(samples: Sequence[Sample]) -> list[list[float]]:
        return [[float(counts[c]) for c in s.candidates] for s in samples]
    return score
