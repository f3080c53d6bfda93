"""`sdporec evaluate`: a checkpoint's metrics on a sample file (`EvaluateConfig`, `run_evaluate`); the
evaluation itself is `sdporec.evaluation.evaluate`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sdporec.commands.groups import (
    chat_template_setting,
    device_setting,
    dtype_setting,
    layout_setting,
    load_in_4bit_setting,
    progress_setting,
    trust_remote_code_setting,
)
from sdporec.commands.settings import setting
from sdporec.config import config_text, require_cuda_for_4bit, require_device, require_input
from sdporec.data.prompts import DOMAINS, TASKS
from sdporec.data.samples import read_samples
from sdporec.errors import ConfigError, DataError, require
from sdporec.evaluation.catalogue import CANDIDATES, Catalogue
from sdporec.evaluation.evaluate import PROTOCOLS, evaluate_model, evaluate_sharded, write_results
from sdporec.evaluation.lm_catalogue import CATALOGUE_SCORES, item_ids, model_catalogue
from sdporec.evaluation.scoring import SCORES, require_readout_weight
from sdporec.models.checkpoints import Checkpoint
from sdporec.models.scoring import running_layout
from sdporec.models.sources import require_no_4bit_gguf, resolve_model
from sdporec.outputs import claim_out_dir, require_apart
from sdporec.runs import EVALUATION_FILES


@dataclass
class EvaluateConfig:
    model: str = setting("", "checkpoint directory (full model or LoRA adapter) or hub name")
    data: str = setting("", "samples to evaluate: the paper's JSON array or JSON Lines")
    out: str = setting("", "output directory for metrics.json and predictions.jsonl")
    protocol: str = setting(
        "ranking",
        "ranking: score every candidate by its answer log-prob; generation: the "
        "paper's greedy decoding, valid when exactly one candidate occurs",
        choices=PROTOCOLS,
    )
    domain: str | None = setting(
        None, "prompt templates to use, template 0 (default: the checkpoint's own, else music)", choices=DOMAINS
    )
    task: str | None = setting(
        None,
        "what the prompt asks: candidates (pick from the listed candidates) or next-item (the history alone) "
        "(default: the task the checkpoint was trained on)",
        choices=TASKS,
    )
    candidates: str = setting(
        "list",
        "list: each sample's own candidates (the paper's 20); all: every title of the catalogue but the history "
        "(HR and NDCG at 1, 5, 10, 20, and MRR; with item tokens the item's log-prob from one forward pass, its EOS "
        "left out; text titles each scored in full on the prompt's cache); with --protocol generation "
        "--constrained, decoding any catalogue title",
        choices=CANDIDATES,
    )
    catalogue: str = setting(
        "",
        "with --candidates all: the titles to rank, one per line (prepare's items.txt); default: the model's item "
        "tokens (the built-in backbone, --item-tokens); required for a model reading titles as text",
    )
    catalogue_score: str = setting(
        "item",
        "with --candidates all and item tokens: item scores log p(item | prompt), every item from one forward pass; "
        "answer scores the item's whole answer (item, then EOS) as a list's candidates are scored, every item's "
        "answer run on the prompt's cache (the catalogue's size in tokens per prompt). Text titles: always answer",
        choices=CATALOGUE_SCORES,
    )
    batch_size: int = setting(16, "samples per batch")
    max_new_tokens: int = setting(20, "generation protocol: most tokens to decode (the paper's evaluation: 20)")
    constrained: bool = setting(
        False,
        "generation protocol: decode only the sample's candidate answers (a token trie over them), each to its "
        "end: every answer is a candidate (ValidRatio 1), and HR@1 is the greedy path's",
    )
    beams: int = setting(
        1, "with --constrained: beam search with N beams, each row keeping the N candidates in the beams' order"
    )
    limit: int = setting(0, "evaluate only the first N samples (0: all)")
    dtype: str = dtype_setting()
    load_in_4bit: bool = load_in_4bit_setting("load the base model in 4-bit NF4 (bitsandbytes, CUDA only)")
    score: str = setting(
        "sum",
        "ranking: a candidate's score is the sum of its answer tokens' log-probs (title + "
        "EOS) or their mean (per token: no preference for short titles)",
        choices=SCORES,
    )
    history_readout: float | None = setting(
        None,
        "ranking: weight λ in [0, 1] of the history readout, each candidate's log-prob as the next title "
        "after the history alone (no prompt; what `sft --history-weight` trains); score = (1 - λ) x answer log-prob "
        "+ λ x that: 0 the prompt alone (the paper's), 0.5 their product, 1 the history alone (default: the λ "
        "training chose on validation, recorded in the checkpoint; 0 where none was)",
    )
    chat_template: str = chat_template_setting()
    trust_remote_code: bool = trust_remote_code_setting()
    layout: str = layout_setting(
        "ranking: auto takes the layout measured fastest on this device type (CPU: packed; "
        "CUDA: paper); packed scores all candidates in one row with the prompt, under a "
        "block mask; flex the same under a FlexAttention block mask; cache on copies of the "
        "prompt's key/value cache; paper runs prompt + candidate 20 times"
    )
    device: str = device_setting(" (one process; under torchrun each process takes its own GPU)")
    progress: bool = progress_setting()
    overwrite: bool = setting(False, "replace the results of an earlier evaluation in OUT")

    def check(self) -> None:
        for name in ("model", "data", "out"):
            require(bool(getattr(self, name)), name, "required")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.limit >= 0, "limit", "must not be negative")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        require_readout_weight(self.history_readout)
        require(not self.constrained or self.protocol == "generation", "constrained", "needs --protocol generation")
        require(self.beams >= 1, "beams", "must be at least 1")
        require(self.beams == 1 or self.constrained, "beams", "needs --constrained (beams inside the candidates)")
        require(not self.catalogue or self.candidates == "all", "catalogue", "is read only with --candidates all")
        require(
            self.catalogue_score == "item" or (self.candidates == "all" and self.protocol == "ranking"),
            "catalogue_score",
            "answer scores the whole catalogue: it needs --candidates all and --protocol ranking",
        )
        require(
            self.candidates == "list" or self.protocol == "ranking" or self.constrained,
            "candidates",
            "all with --protocol generation needs --constrained (free text names no catalogue item reliably)",
        )
        require(
            not self.history_readout or self.protocol == "ranking",
            "history_readout",
            "scores candidates, so it needs --protocol ranking",
        )

    def resolve(self) -> None:
        require_input(self.data, "data")
        require_input(self.catalogue, "catalogue")
        self.model = resolve_model(self.model)
        require_apart(self.out, {"model": self.model, "data": self.data, "catalogue": self.catalogue})
        claim_out_dir(self.out, EVALUATION_FILES, self.overwrite)
        require_device(self.device)
        require_cuda_for_4bit(self.load_in_4bit)
        require_no_4bit_gguf(self.model, self.load_in_4bit)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from sdporec.models.loading import load_for_inference  # local: pulls in transformers
    from sdporec.processes import process_state

    samples, items = read_inputs(cfg)
    if cfg.candidates == "all":
        catalogue_question(cfg.model, cfg.task, cfg.history_readout, cfg.catalogue, cfg.protocol == "ranking")
    state = process_state(cfg.device)
    loaded = load_for_inference(
        cfg.model,
        domain=cfg.domain,
        history_readout=cfg.history_readout,
        ranking=cfg.protocol == "ranking",
        task=cfg.task,
        chat_template=cfg.chat_template,
        dtype=cfg.dtype,
        load_in_4bit=cfg.load_in_4bit,
        samples=samples,
        samples_from=cfg.data,
        device=state.device if state.num_processes > 1 else cfg.device,
    )
    model, codec, cfg.domain, cfg.task = loaded.model, loaded.codec, loaded.domain, loaded.task
    if cfg.protocol == "ranking":
        cfg.history_readout = loaded.history_readout
    if cfg.candidates == "all":
        items = whole_catalogue(cfg, codec, samples, items)
    started = time.time()
    metrics, rows = evaluate_sharded(
        lambda part: evaluate_model(
            model,
            codec,
            part,
            cfg.protocol,
            cfg.domain,
            cfg.batch_size,
            cfg.max_new_tokens,
            cfg.progress and state.is_main_process,
            cfg.layout,
            cfg.score,
            cfg.history_readout,
            cfg.constrained,
            cfg.beams,
            cfg.task,
            items,
            cfg.catalogue_score,
        ),
        samples,
        state.process_index,
        state.num_processes,
    )
    extra = {**run_record(cfg, model, codec, items), "seconds": round(time.time() - started, 1)}
    extra["processes"] = state.num_processes
    if state.is_main_process:
        write_results(cfg.out, metrics, rows, extra, config_text(cfg))
    state.wait_for_everyone()
    return {**metrics, **extra}


def read_inputs(cfg: EvaluateConfig) -> tuple[list, Catalogue | None]:
    """The samples (the first `limit`) and the `--catalogue` file, checked against each other and `--beams` before
    the model loads."""
    samples = read_samples(cfg.data, "eval")
    samples = samples[: cfg.limit] if cfg.limit else samples
    items = Catalogue.read(cfg.catalogue) if cfg.catalogue else None
    if items is not None:
        items.require_known(samples, cfg.data)
        require(cfg.beams <= len(items), "beams", f"must not exceed the catalogue's {len(items)} titles")
    short = next((s for s in samples if len(s.candidates) < cfg.beams), None)
    if short is not None and cfg.candidates == "list":
        raise DataError(
            cfg.data, short.row, "itemList", f"{len(short.candidates)} candidates, fewer than --beams {cfg.beams}"
        )
    return samples, items


def run_record(cfg: EvaluateConfig, model, codec, items: Catalogue | None) -> dict:
    """What metrics.json records beside the metrics: how the evaluation ran."""
    ranking = cfg.protocol == "ranking"
    return {
        "protocol": cfg.protocol,
        "score": cfg.score if ranking else None,
        "layout": running_layout(cfg.layout, model, codec.short_answers) if ranking else None,
        "history_readout": cfg.history_readout if ranking else None,
        "constrained": None if ranking else cfg.constrained,
        "beams": cfg.beams if cfg.constrained else None,
        "task": cfg.task,
        "candidates": cfg.candidates,
        "catalogue": len(items) if items is not None else None,
        "catalogue_score": cfg.catalogue_score if items is not None and ranking else None,
        "chat_template": getattr(codec, "chat", False),
        "model": cfg.model,
        "data": cfg.data,
    }


def catalogue_question(
    model: str, task: str | None, readout: float | None, catalogue: str, ranking: bool = True
) -> None:
    """The whole catalogue asked of `model` (`evaluate --candidates all`, `recommend` without candidates), checked on
    its record before its weights load. A checkpoint trained on the list task has no list to read over the
    catalogue: it ranks by its history readout alone (`ranking`) or is asked the next-item question (`task`). A
    model reading titles as text has no catalogue of its own."""
    record = Checkpoint.read(model)
    task = task or record.recorded("task", "candidates")
    readout = readout if readout is not None else record.recorded_readout
    if task == "candidates" and not (ranking and readout == 1):
        raise ConfigError(
            f"setting 'candidates': {model} was trained to pick from listed candidates (task candidates), and "
            "over the whole catalogue there is no list to show it. Ask it the next-item question it was not trained "
            "on (--task next-item), rank by its history readout alone (--protocol ranking --history-readout 1, for "
            "a checkpoint trained with --history-weight), or train it with --task next-item"
        )
    if not catalogue and record.kind not in ("builtin", "hybrid"):
        raise ConfigError(
            f"setting 'catalogue': {model} reads titles as text, so it has no catalogue of its own; give the "
            "titles to rank with --catalogue FILE, one per line (`prepare` writes items.txt)"
        )


def whole_catalogue(cfg: EvaluateConfig, codec, samples, items: Catalogue | None) -> Catalogue:
    """The catalogue `--candidates all` ranks (`--catalogue`, else the model's item tokens), every sample's
    history and target in it, and with item tokens every title of it a token of the model's."""
    own = items is None
    items = items or model_catalogue(codec, cfg.model)
    try:
        items.require_known(samples, cfg.data)
    except DataError as e:
        raise DataError(
            e.path,
            e.row,
            e.field,
            e.problem
            + (
                "; titles that share an item token are named apart in the data: "
                "give the catalogue as --catalogue items.txt"
                if own
                else ""
            ),
        ) from None
    item_ids(codec, items)
    if own:  # a --catalogue file was checked against --beams before the model loaded
        require(cfg.beams <= len(items), "beams", f"must not exceed the catalogue's {len(items)} titles")
    return items
