"""Scoring candidates: a language model's score of each candidate (`LMScorer`: its answer's log-prob after the
prompt, optionally mixed with the history readout), the rank of the target and the per-sample rows
(`ranking_results`), and the history readout's ranks under several weights at once (`readout_rows`), which
training's validation uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from sdporec.data.batching import IGNORE, collate, same_answer_count
from sdporec.data.prompts import build_prompt
from sdporec.data.samples import Sample
from sdporec.errors import require
from sdporec.evaluation.metrics import NonFiniteError, first_non_finite, rank_of_target, ranking_metrics
from sdporec.models.scoring import resolve_layout, running_layout, scoring_layout

Scorer = Callable[[Sequence[Sample]], list[list[float]]]


def row_head(sample: Sample) -> dict:
    """The fields every predictions.jsonl row starts with: the sample's key, what it asks (`compare` pairs by
    it) and its target."""
    return {"key": sample.key, "sample": sample.content_key(), "target": sample.target}


def prompt_batches(
    codec,
    samples: Sequence[Sample],
    domain: str,
    batch_size: int,
    device,
    template: int = 0,
    progress: bool = True,
    task: str = "candidates",
):
    """The samples `batch_size` at a time with their prompts (template `template` of `task`) collated on `device`:
    (samples, batch) pairs, for generation (each batch's one answer is a placeholder EOS)."""
    for start in tqdm(
        range(0, len(samples), batch_size), desc="generating", unit="batch", disable=not progress, leave=False
    ):
        chunk = samples[start : start + batch_size]
        batch = collate(
            [codec.encode_prompt(build_prompt(s.history, s.candidates, domain, template, task)) for s in chunk],
            [[[codec.eos_id]] for _ in chunk],
            codec.pad_id,
        )
        yield chunk, batch.to(device)


def generation_row(sample: Sample, text: str, answer: str | None) -> dict:
    """A generation's predictions row: the decoded text, the candidate it names (None: invalid) and whether it hits."""
    return {
        **row_head(sample),
        "generated": text,
        "answer": answer,
        "valid": answer is not None,
        "hit": answer == sample.target,
    }


def ranking_results(samples: Sequence[Sample], scores: Sequence[Sequence[float]]) -> tuple[dict, list[dict]]:
    """Metrics and per-sample rows from candidate scores (one list per sample, in prompt order)."""
    ranks, rows = [], []
    for s, sc in zip(samples, scores):
        require_finite(s, sc)
        rank = rank_of_target(sc, s.candidates.index(s.target))
        ranks.append(rank)
        order = sorted(range(len(sc)), key=lambda i: (-sc[i], i))
        rows.append(
            {
                **row_head(s),
                "rank": rank,
                "valid": True,
                "ranked": [[s.candidates[i], round(float(sc[i]), 6)] for i in order],
            }
        )
    return ranking_metrics(ranks), rows


def require_finite(sample: Sample, scores: Sequence[float]) -> None:
    """Scores of NaN or ±inf are an error naming the sample and candidate (a NaN would rank the target first)."""
    bad = first_non_finite(scores)
    if bad is not None:
        where = f"sample {sample.key}" + (f" (row {sample.row} of its file)" if sample.row is not None else "")
        raise NonFiniteError(
            f"{where}: candidate {sample.candidates[bad]!r} has score {scores[bad]}; the model's "
            "outputs are not finite numbers (weights holding NaN or inf, or a float16 overflow: "
            "try --dtype float32), so no ranking can be measured"
        )


SCORES = ("sum", "mean")


def require_readout_weight(weight: float | None, name: str = "history_readout") -> None:
    """A history readout's weight λ as a setting: None (the one the checkpoint records) or in [0, 1]."""
    require(weight is None or 0 <= weight <= 1, name, "must be in [0, 1]")


def mix_readouts(prompt: Sequence[Sequence[float]], history: Sequence[Sequence[float]], w: float) -> list[list[float]]:
    """Per sample and candidate, (1 - w) x its prompt score + w x its history score (`--history-readout`)."""
    return [[(1 - w) * p + w * h for p, h in zip(ps, hs)] for ps, hs in zip(prompt, history)]


class LMScorer:
    """Scores every candidate of every sample by its answer log-prob after the prompt (`score`: `sum` over the
    answer's tokens, title and EOS, or their `mean`, which does not favour short titles); the prompt is run
    once per sample (`layout`: see `scoring.scoring_layout`; `paper` runs it once per candidate).

    `history_readout` (λ in [0, 1]) mixes in the history readout: each candidate's log-prob as the next title after the
    history alone (BOS and the history's titles, no template or candidate list: what `sft --history-weight`
    trains, and how SASRec scores). A candidate's score is (1 - λ) x its answer's + λ x that: 0 is the prompt
    alone, 0.5 ranks by the product of the two probabilities, 1 is the history alone."""

    def __init__(
        self,
        model,
        codec,
        domain: str,
        batch_size: int = 16,
        template: int = 0,
        progress: bool = True,
        layout: str = "auto",
        score: str = "sum",
        history_readout: float = 0.0,
        task: str = "candidates",
    ):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if not 0 <= history_readout <= 1:
            raise ValueError(f"the history readout's weight must be in [0, 1], got {history_readout}")
        self.model, self.codec, self.domain, self.template = model, codec, domain, template
        self.batch_size, self.progress, self.score = batch_size, progress, score
        self.history_readout, self.task = history_readout, task
        self.layout = resolve_layout(layout, next(model.parameters()).device, codec.short_answers)
        self.logprobs = scoring_layout(self.layout, codec.short_answers)

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        w = self.history_readout
        if w == 0:
            return self.prompt_scores(samples)
        if w == 1:
            return self.history_scores(samples)
        return mix_readouts(self.prompt_scores(samples), self.history_scores(samples), w)

    def prompt(self, sample: Sample) -> list[int]:
        """The sample's prompt ids (template `template` of the scorer's domain and task)."""
        return self.codec.encode_prompt(
            build_prompt(sample.history, sample.candidates, self.domain, self.template, self.task)
        )

    def prompt_scores(self, samples: Sequence[Sample]) -> list[list[float]]:
        codec = self.codec
        prompts = [self.prompt(s) for s in samples]
        return self.answer_scores(prompts, [[codec.encode_answer(c) for c in s.candidates] for s in samples])

    def history_scores(self, samples: Sequence[Sample]) -> list[list[float]]:
        codec = self.codec
        return self.answer_scores(
            [codec.encode_history(s.history, IGNORE)[0] for s in samples],
            [[codec.encode_next_title(c) for c in s.candidates] for s in samples],
        )

    def answer_scores(self, prompts: list[list[int]], answers: list[list[list[int]]]) -> list[list[float]]:
        """Each answer's score after its prompt, in the samples' order."""
        model, pad = self.model, self.codec.pad_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        self.layout = running_layout(self.layout, model, self.codec.short_answers)  # flex may fall back
        # Batches of similar length waste less on padding; the scores go back in the samples' order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + sum(map(len, answers[i])))
        out: list[list[float]] = [[] for _ in prompts]
        try:
            with torch.no_grad():
                for start in tqdm(
                    range(0, len(prompts), self.batch_size),
                    desc="scoring",
                    unit="batch",
                    disable=not self.progress,
                    leave=False,
                ):
                    chunk = order[start : start + self.batch_size]
                    batch = collate(
                        [prompts[i] for i in chunk], same_answer_count([answers[i] for i in chunk], pad), pad
                    ).to(device)
                    logps, counts = self.logprobs(model, batch)
                    if self.score == "mean":
                        logps = logps / counts.clamp(min=1)
                    for i, row in zip(chunk, logps.tolist()):
                        out[i] = row[: len(answers[i])]
        finally:
            model.train(was_training)
        return out


def readout_rows(scorer: LMScorer, samples: Sequence[Sample], weights: Sequence[float]) -> tuple[dict, list[dict]]:
    """Each sample's target rank under every history readout weight in `weights` (row field `ranks`, in their
    order; `rank` is the first's), from one pass of each readout; the metrics of the first weight."""
    prompt = scorer.prompt_scores(samples) if any(w < 1 for w in weights) else []
    history = scorer.history_scores(samples) if any(w > 0 for w in weights) else []
    ranks = []
    for w in weights:
        scores = prompt if w == 0 else history if w == 1 else mix_readouts(prompt, history, w)
        ranks.append([row["rank"] for row in ranking_results(samples, scores)[1]])
    rows = [{**row_head(s), "rank": r[0], "ranks": list(r), "valid": True} for s, r in zip(samples, zip(*ranks))]
    return ranking_metrics([r["rank"] for r in rows]), rows


def readout_metrics(rows: Sequence[dict], weights: Sequence[float]) -> dict[float, dict]:
    """Ranking metrics per history readout weight, from `readout_rows`' rows (gathered from every process)."""
    return {w: ranking_metrics([r["ranks"][i] for r in rows]) for i, w in enumerate(weights)}
