"""Evaluation: one path for every scorer (language models and baselines).

`--protocol ranking` (default): each candidate's score is the summed log-prob of its answer (title + EOS)
after the prompt (`--history-readout λ`: mixed with its log-prob as the next title after the history alone); metrics
come from the target's rank. `--protocol generation` is the paper's: greedy
decoding, valid when exactly one candidate title occurs in the output (with item tokens: when the first item
token generated is a candidate's). Both return metrics and one row
per sample, written by `write_results` as `metrics.json` and `predictions.jsonl`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdporec.config import require_cuda_for_4bit, require_device, require_input, save_config, setting
from sdporec.data.batching import collate, same_answer_count
from sdporec.data.codec import CHAT_CHOICES
from sdporec.data.prompts import DOMAINS, build_prompt
from sdporec.data.samples import Sample, read_samples
from sdporec.errors import require
from sdporec.evaluation.metrics import (
    NonFiniteError,
    first_non_finite,
    generation_metrics,
    parse_generation,
    rank_of_target,
    ranking_metrics,
)
from sdporec.files import atomic_write_text, write_jsonl
from sdporec.models.logprobs import IGNORE
from sdporec.models.scoring import LAYOUTS, scoring_layout
from sdporec.models.sources import require_no_4bit_gguf, resolve_model
from sdporec.outputs import claim_out_dir

PROTOCOLS = ("ranking", "generation")
Scorer = Callable[[Sequence[Sample]], list[list[float]]]


def row_head(sample: Sample) -> dict:
    """The fields every predictions.jsonl row starts with: the sample's key, what it asks (`compare` pairs by
    it) and its target."""
    return {"key": sample.key, "sample": sample.content_key(), "target": sample.target}


def ranking_results(samples: Sequence[Sample], scores: Sequence[Sequence[float]]) -> tuple[dict, list[dict]]:
    """Metrics and per-sample rows from candidate scores (one list per sample, in prompt order)."""
    ranks, rows = [], []
    for s, sc in zip(samples, scores):
        require_finite(s, sc)
        rank = rank_of_target(sc, s.candidates.index(s.target))
        ranks.append(rank)
        order = sorted(range(len(sc)), key=lambda i: (-sc[i], i))
        rows.append({**row_head(s), "rank": rank, "valid": True,
                     "ranked": [[s.candidates[i], round(float(sc[i]), 6)] for i in order]})
    return ranking_metrics(ranks), rows


def require_finite(sample: Sample, scores: Sequence[float]) -> None:
    """Scores of NaN or ±inf are an error naming the sample and candidate (a NaN would rank the target first)."""
    bad = first_non_finite(scores)
    if bad is not None:
        where = f"sample {sample.key}" + (f" (row {sample.row} of its file)" if sample.row is not None else "")
        raise NonFiniteError(f"{where}: candidate {sample.candidates[bad]!r} has score {scores[bad]}; the model's "
                         "outputs are not finite numbers (weights holding NaN or inf, or a float16 overflow: "
                         "try --dtype float32), so no ranking can be measured")


SCORES = ("sum", "mean")


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

    def __init__(self, model, codec, domain: str, batch_size: int = 16, template: int = 0, progress: bool = True,
                 layout: str = "packed", score: str = "sum", history_readout: float = 0.0):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if not 0 <= history_readout <= 1:
            raise ValueError(f"the history readout's weight must be in [0, 1], got {history_readout}")
        self.model, self.codec, self.domain, self.template = model, codec, domain, template
        self.batch_size, self.progress, self.score = batch_size, progress, score
        self.history_readout = history_readout
        self.logprobs = scoring_layout(layout, codec.short_answers)

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        w = self.history_readout
        if w == 0:
            return self.prompt_scores(samples)
        if w == 1:
            return self.history_scores(samples)
        return mix_readouts(self.prompt_scores(samples), self.history_scores(samples), w)

    def prompt_scores(self, samples: Sequence[Sample]) -> list[list[float]]:
        codec = self.codec
        prompts = [codec.encode_prompt(build_prompt(s.history, s.candidates, self.domain, self.template))
                   for s in samples]
        return self.answer_scores(prompts, [[codec.encode_answer(c) for c in s.candidates] for s in samples])

    def history_scores(self, samples: Sequence[Sample]) -> list[list[float]]:
        codec = self.codec
        return self.answer_scores([codec.encode_history(s.history, IGNORE)[0] for s in samples],
                                  [[codec.encode_next_title(c) for c in s.candidates] for s in samples])

    def answer_scores(self, prompts: list[list[int]], answers: list[list[list[int]]]) -> list[list[float]]:
        """Each answer's score after its prompt, in the samples' order."""
        model, pad = self.model, self.codec.pad_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        # Batches of similar length waste less on padding; the scores go back in the samples' order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + sum(map(len, answers[i])))
        out: list[list[float]] = [[] for _ in prompts]
        try:
            with torch.no_grad():
                for start in tqdm(range(0, len(prompts), self.batch_size), desc="scoring", unit="batch",
                                  disable=not self.progress, leave=False):
                    chunk = order[start:start + self.batch_size]
                    batch = collate([prompts[i] for i in chunk], same_answer_count([answers[i] for i in chunk], pad),
                                    pad).to(device)
                    logps, counts = self.logprobs(model, batch)
                    if self.score == "mean":
                        logps = logps / counts.clamp(min=1)
                    for i, row in zip(chunk, logps.tolist()):
                        out[i] = row[:len(answers[i])]
        finally:
            model.train(was_training)
        return out


def evaluate_ranking(scorer: Scorer, samples: Sequence[Sample]) -> tuple[dict, list[dict]]:
    return ranking_results(samples, scorer(samples))


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


def metrics_from_rows(rows: Sequence[dict]) -> dict:
    """The metrics of either protocol from its per-sample rows (used after gathering processes' rows)."""
    if rows and "rank" in rows[0]:
        return ranking_metrics([r["rank"] for r in rows])
    return generation_metrics([r["answer"] for r in rows], [r["target"] for r in rows])


def evaluate_sharded(evaluate: Callable[[Sequence[Sample]], tuple[dict, list[dict]]], samples: Sequence[Sample],
                     rank: int, world: int) -> tuple[dict, list[dict]]:
    """`evaluate` on this process's slice of `samples`; every process gets all rows, in sample order, and
    the metrics over all of them (one process: `evaluate(samples)` itself)."""
    if world == 1:
        return evaluate(samples)
    from sdporec.processes import even_shard, gather

    part, real = even_shard(samples, rank, world)   # every process runs as many batches: sharded models wait
    _, rows = evaluate(part)
    rows = gather(rows[:real], world)
    return metrics_from_rows(rows), rows


def evaluate_generation(model, codec, samples: Sequence[Sample], domain: str, batch_size: int = 16,
                        max_new_tokens: int = 20, template: int = 0, progress: bool = True) -> tuple[dict, list[dict]]:
    """The paper's protocol: greedy decoding of at most `max_new_tokens` tokens (its evaluation used 20), a
    row ending at its EOS, the batch ending when every row has (as `generate` does). No shorter cap: text
    decoded after a first title can name a second one, which makes the answer invalid."""
    device = next(model.parameters()).device
    model.eval()
    synced = torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1
    answers: list[str | None] = []
    rows: list[dict] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(samples), batch_size), desc="generating", unit="batch",
                          disable=not progress, leave=False):
            chunk = samples[start:start + batch_size]
            batch = collate([codec.encode_prompt(build_prompt(s.history, s.candidates, domain, template))
                             for s in chunk], [[[codec.eos_id]] for _ in chunk], codec.pad_id).to(device)
            # synced_gpus: under several processes each keeps decoding until all are done (a sharded model's
            # every forward is a collective).
            generated = model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, synced_gpus=synced,
                                       do_sample=False, max_new_tokens=max_new_tokens,
                                       pad_token_id=codec.pad_id, eos_token_id=codec.eos_id)
            for s, ids in zip(chunk, generated[:, batch.prompt_ids.shape[1]:].tolist()):
                text = codec.decode(ids)
                answer = generated_answer(codec, ids, text, s.candidates)
                answers.append(answer)
                rows.append({**row_head(s), "generated": text, "answer": answer, "valid": answer is not None,
                             "hit": answer == s.target})
    return generation_metrics(answers, [s.target for s in samples]), rows


def generated_answer(codec, ids: Sequence[int], text: str, candidates: Sequence[str]) -> str | None:
    """The candidate a generation names: with item tokens, its first item token's (valid when that item is a
    candidate); else the one candidate title that occurs in the decoded text (`parse_generation`)."""
    if hasattr(codec, "generated_candidate"):
        return codec.generated_candidate(ids, candidates)
    return parse_generation(text, candidates)


RESULT_FILES = ("metrics.json", "predictions.jsonl", "config.yaml")


def write_results(out_dir: str | Path, metrics: dict, rows: list[dict], extra: dict | None = None) -> None:
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "predictions.jsonl", number_repeats(rows))
    atomic_write_text(out_dir / "metrics.json", json.dumps({**metrics, **(extra or {})}, indent=2) + "\n")


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


@dataclass
class EvaluateConfig:
    model: str = setting("", "checkpoint directory (full model or LoRA adapter) or hub name")
    data: str = setting("", "samples to evaluate: the paper's JSON array or JSON Lines")
    out: str = setting("", "output directory for metrics.json and predictions.jsonl")
    protocol: str = setting("ranking", "ranking: score every candidate by its answer log-prob; generation: the "
                        "paper's greedy decoding, valid when exactly one candidate occurs", choices=PROTOCOLS)
    domain: str | None = setting(None, "prompt templates to use, template 0 (default: the checkpoint's own, else "
                             "music)", choices=DOMAINS)
    batch_size: int = setting(16, "samples per batch")
    max_new_tokens: int = setting(20, "generation protocol: most tokens to decode (the paper's evaluation: 20)")
    limit: int = setting(0, "evaluate only the first N samples (0: all)")
    dtype: str = setting("float32", "weights' dtype", choices=("float32", "bfloat16", "float16"))
    load_in_4bit: bool = setting(False, "load the base model in 4-bit NF4 (bitsandbytes, CUDA only)")
    score: str = setting("sum", "ranking: a candidate's score is the sum of its answer tokens' log-probs (title + "
                     "EOS) or their mean (per token: no preference for short titles)", choices=SCORES)
    history_readout: float | None = setting(
        None, "ranking: weight λ in [0, 1] of the history readout, each candidate's log-prob as the next title "
        "after the history alone (no prompt; what `sft --history-weight` trains); score = (1 - λ) x answer log-prob "
        "+ λ x that: 0 the prompt alone (the paper's), 0.5 their product, 1 the history alone (default: the λ "
        "training chose on validation, recorded in the checkpoint; 0 where none was)")
    chat_template: str = setting("auto", "text prompts in the tokenizer's chat template: auto (what the checkpoint "
                             "was trained with; else on where the tokenizer has one), on or off",
                             choices=CHAT_CHOICES)
    layout: str = setting("packed", "ranking: packed scores all candidates in one row with the prompt, under a "
                      "block mask; cache on copies of the prompt's key/value cache; paper runs prompt + "
                      "candidate 20 times (for comparisons)", choices=LAYOUTS)
    device: str = setting("auto", "cpu, cuda, cuda:N or auto (one process; under torchrun each process "
                      "takes its own GPU)")
    progress: bool = setting(True, "show progress bars")
    overwrite: bool = setting(False, "replace the results of an earlier evaluation in OUT")

    def validate(self) -> None:
        for name in ("model", "data", "out"):
            require(bool(getattr(self, name)), name, "required")
        require_input(self.data, "data")
        claim_out_dir(self.out, RESULT_FILES, self.overwrite)
        require_device(self.device)
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.limit >= 0, "limit", "must not be negative")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        require(self.history_readout is None or 0 <= self.history_readout <= 1, "history_readout", "must be in [0, 1]")
        require(not self.history_readout or self.protocol == "ranking", "history_readout",
                "scores candidates, so it needs --protocol ranking")
        require_cuda_for_4bit(self.load_in_4bit)
        self.model = resolve_model(self.model)
        require_no_4bit_gguf(self.model, self.load_in_4bit)


def evaluate_model(model, codec, samples: Sequence[Sample], protocol: str, domain: str, batch_size: int = 16,
                   max_new_tokens: int = 20, progress: bool = True, layout: str = "packed",
                   score: str = "sum", history_readout: float = 0.0) -> tuple[dict, list[dict]]:
    """The one evaluation entry point for language models, for both protocols."""
    if protocol == "generation":
        return evaluate_generation(model, codec, samples, domain, batch_size, max_new_tokens, progress=progress)
    scorer = LMScorer(model, codec, domain, batch_size, progress=progress, layout=layout, score=score,
                      history_readout=history_readout)
    return evaluate_ranking(scorer, samples)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from sdporec.models.loading import load_for_inference  # local: pulls in transformers
    from sdporec.processes import process_state

    samples = read_samples(cfg.data, "eval")
    samples = samples[:cfg.limit] if cfg.limit else samples
    state = process_state(cfg.device)
    loaded = load_for_inference(cfg.model, domain=cfg.domain, history_readout=cfg.history_readout,
                                ranking=cfg.protocol == "ranking", chat_template=cfg.chat_template, dtype=cfg.dtype,
                                load_in_4bit=cfg.load_in_4bit, samples=samples, samples_from=cfg.data,
                                device=state.device if state.num_processes > 1 else cfg.device)
    model, codec, cfg.domain = loaded.model, loaded.codec, loaded.domain
    if cfg.protocol == "ranking":
        cfg.history_readout = loaded.history_readout
    started = time.time()
    metrics, rows = evaluate_sharded(
        lambda part: evaluate_model(model, codec, part, cfg.protocol, cfg.domain, cfg.batch_size,
                                    cfg.max_new_tokens, cfg.progress and state.is_main_process, cfg.layout,
                                    cfg.score, cfg.history_readout),
        samples, state.process_index, state.num_processes)
    ranking = cfg.protocol == "ranking"
    extra = {"protocol": cfg.protocol, "score": cfg.score if ranking else None,
             "history_readout": cfg.history_readout if ranking else None,
             "chat_template": getattr(codec, "chat", False), "model": cfg.model, "data": cfg.data,
             "seconds": round(time.time() - started, 1), "processes": state.num_processes}
    if state.is_main_process:
        save_config(cfg, cfg.out)
        write_results(cfg.out, metrics, rows, extra)
    state.wait_for_everyone()
    return {**metrics, **extra}
