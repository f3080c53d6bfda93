"""Ranking the whole catalogue, as the recommender field measures (RecBole's full ranking), beside the paper's
list of 20 candidates: every item of the catalogue but the sample's history is ranked, and the target's 0-based
rank gives HR@K and NDCG@K at K = 1, 5, 10, 20 and MRR (`metrics.CATALOGUE_KEYS`).

A model ranks the catalogue through a `CatalogueScorer`: samples and the catalogue -> a (samples x items) tensor
of scores in the catalogue's order. History items are not ranked, except the target where the user came back to
it. Ties with the target are broken at random, seeded per sample: its rank is the number of items scored above it
plus a uniform draw from 0 to the number scored the same, so a constant scorer gets an uninformed guess's rank and
no credit from the catalogue's order.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from sdporec.data.candidates import sample_rng
from sdporec.data.samples import Sample
from sdporec.errors import DataError
from sdporec.evaluation.metrics import CATALOGUE_KEYS, NonFiniteError, ranking_metrics
from sdporec.evaluation.scoring import row_head
from sdporec.files import read_text, text_lines

TOP = 20  # the best items a predictions row keeps
CANDIDATES = ("list", "all")  # what `--candidates` ranks: each sample's own list, or the whole catalogue


class Catalogue:
    """The items a model ranks, in a fixed order (the columns of a `CatalogueScorer`'s scores)."""

    def __init__(self, titles: Iterable[str], source: str = "the samples"):
        self.titles = list(dict.fromkeys(titles))
        self.index = {t: i for i, t in enumerate(self.titles)}
        self.source = source

    @classmethod
    def of_samples(cls, *groups: Sequence[Sample]) -> Catalogue:
        """Every title the samples name (histories, candidates and targets), sorted."""
        titles = {t for group in groups for s in group for t in (*s.history, *s.candidates, s.target)}
        return cls(sorted(titles))

    @classmethod
    def read(cls, path: str | os.PathLike) -> Catalogue:
        """A catalogue file (`prepare`'s items.txt): one title per line, blank lines skipped."""
        titles = [t.strip() for t in text_lines(read_text(path)) if t.strip()]
        if not titles:
            raise DataError(path, None, None, "holds no titles (a catalogue file has one title per line)")
        return cls(titles, str(path))

    def __len__(self) -> int:
        return len(self.titles)

    def require_known(self, samples: Sequence[Sample], path: str) -> None:
        """Every history title and target of `samples` is in the catalogue, or a DataError naming the first
        that is not (its file, row and title)."""
        for s in samples:
            for name, titles in (("historyList", s.history), ("trueSelection", [s.target])):
                unknown = next((t for t in titles if t not in self.index), None)
                if unknown is not None:
                    raise DataError(
                        path,
                        s.row if s.row is not None else s.key,
                        name,
                        f"title {unknown!r} is not in the catalogue ({self.source}, {len(self)} titles)",
                    )


CatalogueScorer = Callable[[Sequence[Sample], Catalogue], torch.Tensor]


def target_rank(scores: torch.Tensor, target: int, excluded: Sequence[int], rng: random.Random) -> int:
    """The target's 0-based rank among the items of `scores` (one per catalogue item) outside `excluded`:
    the items scored above it, plus a seeded uniform share of those scored the same. Scores must be finite (a NaN
    compares false with everything, so it would rank the target first)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[list(excluded)] = False
    keep[target] = False
    t = scores[target]
    above = int((scores[keep] > t).sum())
    level = int((scores[keep] == t).sum())
    return above + (rng.randint(0, level) if level else 0)


def catalogue_results(
    samples: Sequence[Sample], scores: torch.Tensor, catalogue: Catalogue, seed: int = 0
) -> tuple[dict, list[dict]]:
    """Metrics and per-sample rows (the target's rank, how many items were ranked, the top `TOP` with scores)
    from (samples x catalogue) scores."""
    ranks, rows = [], []
    for s, row in zip(samples, scores.float()):
        if not bool(torch.isfinite(row).all()):
            bad = int((~torch.isfinite(row)).nonzero()[0])
            raise NonFiniteError(
                f"sample {s.key}: catalogue item {catalogue.titles[bad]!r} has score {float(row[bad])}; the model's "
                "outputs are not finite numbers, so no ranking can be measured"
            )
        excluded = sorted({catalogue.index[h] for h in s.history} - {catalogue.index[s.target]})
        rank = target_rank(row, catalogue.index[s.target], excluded, sample_rng(seed, "catalogue", s.key))
        ranks.append(rank)
        masked = row.clone()
        masked[excluded] = float("-inf")
        best = torch.topk(masked, min(TOP, len(catalogue) - len(excluded))).indices.tolist()
        rows.append(
            {
                **row_head(s),
                "rank": rank,
                "valid": True,
                "catalogue": len(catalogue) - len(excluded),
                "ranked": [[catalogue.titles[i], round(float(row[i]), 6)] for i in best],
            }
        )
    return ranking_metrics(ranks, CATALOGUE_KEYS), rows


def evaluate_catalogue(
    scorer: CatalogueScorer,
    samples: Sequence[Sample],
    catalogue: Catalogue,
    seed: int = 0,
    batch: int = 256,
    progress: bool = False,
) -> tuple[dict, list[dict]]:
    """`scorer` over the whole catalogue, `batch` samples at a time (a batch's scores are samples x items)."""
    rows: list[dict] = []
    starts = range(0, len(samples), batch)
    for start in tqdm(starts, desc="ranking the catalogue", unit="batch", disable=not progress, leave=False):
        part = samples[start : start + batch]
        scores = scorer(part, catalogue)
        if tuple(scores.shape) != (len(part), len(catalogue)):
            raise ValueError(f"a catalogue scorer gave {tuple(scores.shape)}, not {(len(part), len(catalogue))}")
        rows += catalogue_results(part, scores, catalogue, seed)[1]
    return ranking_metrics([r["rank"] for r in rows], CATALOGUE_KEYS), rows
