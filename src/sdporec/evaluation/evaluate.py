"""Evaluation: one path for every scorer (language models and baselines).

`--protocol ranking` (default): each candidate's score is the summed log-prob of its answer (title + EOS)
after the prompt (`--history-readout λ`: mixed with its log-prob as the next title after the history alone); metrics
come from the target's rank. `--protocol generation` is the paper's: greedy
decoding, valid when exactly one candidate title occurs in the output (with item tokens: when the first item
token generated is a candidate's). Both return metrics and one row
per sample, written by `write_results` as `metrics.json` and `predictions.jsonl`. How candidates are scored
is `scoring.py`; over the whole catalogue (`--candidates all`) `lm_catalogue.py` and `catalogue.py`, and
`constrained.py` for decoding constrained to the candidates or the catalogue; the `sdporec evaluate` command is
`sdporec.commands.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue, evaluate_catalogue
from sdporec.evaluation.constrained import generate_constrained
from sdporec.evaluation.lm_catalogue import LMCatalogue
from sdporec.evaluation.metrics import (
    CATALOGUE_KEYS,
    RANK_KEYS,
    beam_hits,
    generation_metrics,
    parse_generation,
    ranking_metrics,
)
from sdporec.evaluation.scoring import LMScorer, Scorer, generation_row, prompt_batches, ranking_results
from sdporec.files import atomic_write_text, output_set, write_jsonl
from sdporec.processes import several_processes
from sdporec.runs import CONFIG, METRICS, PREDICTIONS, evaluation_metrics, write_json

PROTOCOLS = ("ranking", "generation")


def evaluate_ranking(scorer: Scorer, samples: Sequence[Sample]) -> tuple[dict, list[dict]]:
    return ranking_results(samples, scorer(samples))


def metrics_from_rows(rows: Sequence[dict]) -> dict:
    """The metrics of either protocol from its per-sample rows (used after gathering processes' rows)."""
    if rows and "rank" in rows[0]:
        keys = CATALOGUE_KEYS if "catalogue" in rows[0] else RANK_KEYS
        return ranking_metrics([r["rank"] for r in rows], keys)
    metrics = generation_metrics([r["answer"] for r in rows], [r["target"] for r in rows])
    return metrics | beam_hits(rows)


def evaluate_sharded(
    evaluate: Callable[[Sequence[Sample]], tuple[dict, list[dict]]], samples: Sequence[Sample], rank: int, world: int
) -> tuple[dict, list[dict]]:
    """`evaluate` on this process's slice of `samples`; every process gets all rows, in sample order, and
    the metrics over all of them (one process: `evaluate(samples)` itself)."""
    if world == 1:
        return evaluate(samples)
    from sdporec.processes import even_shard, gather

    part, real = even_shard(samples, rank, world)  # every process runs as many batches: sharded models wait
    _, rows = evaluate(part)
    rows = gather(rows[:real], world)
    return metrics_from_rows(rows), rows


def evaluate_generation(
    model,
    codec,
    samples: Sequence[Sample],
    domain: str,
    batch_size: int = 16,
    max_new_tokens: int = 20,
    template: int = 0,
    progress: bool = True,
    constrained: bool = False,
    beams: int = 1,
    task: str = "candidates",
    catalogue=None,
) -> tuple[dict, list[dict]]:
    """The paper's protocol: greedy decoding of at most `max_new_tokens` tokens (its evaluation used 20), a
    row ending at its EOS, the batch ending when every row has (as `generate` does). No shorter cap: text
    decoded after a first title can name a second one, which makes the answer invalid. `constrained`: only the
    sample's candidate answers can be decoded, each to its end (`constrained.py`), with `beams` beams; with a
    `catalogue` (a `catalogue.Catalogue`), any of its titles but the history."""
    if constrained:
        return generate_constrained(
            model, codec, samples, domain, batch_size, beams, template, progress, task, catalogue
        )
    model.eval()
    answers: list[str | None] = []
    rows: list[dict] = []
    with torch.no_grad():
        device = next(model.parameters()).device
        for chunk, batch in prompt_batches(codec, samples, domain, batch_size, device, template, progress, task):
            generated = model.generate(
                input_ids=batch.prompt_ids,
                attention_mask=batch.prompt_mask,
                synced_gpus=several_processes(),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=codec.pad_id,
                eos_token_id=codec.eos_id,
            )
            for s, ids in zip(chunk, generated[:, batch.prompt_ids.shape[1] :].tolist()):
                text = codec.decode(ids)
                answers.append(generated_answer(codec, ids, text, s.candidates))
                rows.append(generation_row(s, text, answers[-1]))
    return generation_metrics(answers, [s.target for s in samples]), rows


def generated_answer(codec, ids: Sequence[int], text: str, candidates: Sequence[str]) -> str | None:
    """The candidate a generation names: with item tokens, its first item token's (valid when that item is a
    candidate); else the one candidate title that occurs in the decoded text (`parse_generation`)."""
    if hasattr(codec, "generated_candidate"):
        return codec.generated_candidate(ids, candidates)
    return parse_generation(text, candidates)


def write_results(
    out_dir: str | Path, metrics: dict, rows: list[dict], extra: dict | None = None, config: str | None = None
) -> None:
    """predictions.jsonl, metrics.json and (given its YAML text) config.yaml, written as one set (`output_set`):
    a failure leaves the earlier set in `out_dir` whole, and config.yaml goes in last."""
    with output_set(out_dir, CONFIG if config is not None else METRICS) as stage:
        write_jsonl(stage / PREDICTIONS, number_repeats(rows))
        write_json(stage / METRICS, evaluation_metrics(metrics, extra))
        if config is not None:
            atomic_write_text(stage / CONFIG, config)


def number_repeats(rows: list[dict]) -> list[dict]:
    """Rows whose `sample` repeats an earlier row's (a file may ask the same question twice) get `#2`, `#3`, ...
    so every row's `sample` is unique in its file and `compare` pairs the n-th occurrence with the n-th."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if "sample" in row:
            seen[row["sample"]] = n = seen.get(row["sample"], 0) + 1
            row = {**row, "sample": row["sample"] + (f"#{n}" if n > 1 else "")}
        out.append(row)
    return out


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per named result, the shared metric columns."""
    cols = ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr", "valid_ratio", "n")
    lines = [f"{'':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in results.items():
        cells = "".join(f"{'-' if m.get(c) is None else (m[c] if c == 'n' else format(m[c], '.4f')):>12}" for c in cols)
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)


def evaluate_model(
    model,
    codec,
    samples: Sequence[Sample],
    protocol: str,
    domain: str,
    batch_size: int = 16,
    max_new_tokens: int = 20,
    progress: bool = True,
    layout: str = "auto",
    score: str = "sum",
    history_readout: float = 0.0,
    constrained: bool = False,
    beams: int = 1,
    task: str = "candidates",
    catalogue: Catalogue | None = None,
    catalogue_score: str = "item",
) -> tuple[dict, list[dict]]:
    """The one evaluation entry point for language models, for both protocols: each sample's candidates, or
    with a `catalogue` every title of it but the history (`lm_catalogue.py`, `catalogue_score` its
    `CATALOGUE_SCORES`; generation: constrained)."""
    if protocol == "generation":
        return evaluate_generation(
            model, codec, samples, domain, batch_size, max_new_tokens, 0, progress, constrained, beams, task, catalogue
        )
    scorer = LMScorer(
        model,
        codec,
        domain,
        batch_size,
        progress=progress,
        layout=layout,
        score=score,
        history_readout=history_readout,
        task=task,
    )
    if catalogue is not None:
        ranker = LMCatalogue(scorer, score=catalogue_score)
        return evaluate_catalogue(ranker, samples, catalogue, batch=batch_size, progress=progress)
    return evaluate_ranking(scorer, samples)
