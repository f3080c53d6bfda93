"""`sdporec recommend`: rank candidates for one history with a trained model."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .config import opt, require, require_device, require_input
from .codec import CHAT_CHOICES, require_known_titles
from .evaluate import SCORES, lm_scorer, require_finite
from .prompts import DOMAINS
from .samples import DataError, Sample, read_json_object, split_history
from .sources import resolve_model


@dataclass
class RecommendConfig:
    model: str = opt("", "checkpoint directory (full model or LoRA adapter) or hub name")
    history: list[str] = opt([], "titles the user interacted with, oldest first")
    candidates: list[str] = opt([], "titles to rank")
    input: str = opt("", "a JSON file with 'historyList' and 'itemList' (instead of the two flags)")
    domain: str | None = opt(None, "prompt templates to use, template 0 (default: the checkpoint's own, else "
                             "music)", choices=DOMAINS)
    top: int = opt(0, "print only the N best (0: all)")
    json: bool = opt(False, "print JSON instead of a table")
    score: str = opt("sum", "a candidate's score: the sum or the per-token mean of its answer's log-probs",
                     choices=SCORES)
    chat_template: str = opt("auto", "text prompts in the tokenizer's chat template: auto (what the checkpoint "
                             "was trained with; else on where the tokenizer has one), on or off",
                             choices=CHAT_CHOICES)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")

    def validate(self) -> None:
        require(bool(self.model), "model", "required")
        require(bool(self.input) != bool(self.history or self.candidates), "input",
                "give either --input or both --history and --candidates")
        require(self.top >= 0, "top", "must not be negative")
        require_input(self.input, "input")
        require_device(self.device)
        self.model = resolve_model(self.model)


def read_request(cfg: RecommendConfig) -> Sample:
    if not cfg.input:
        history, candidates, where = cfg.history, cfg.candidates, "command line"
    else:
        where = cfg.input
        obj = read_json_object(cfg.input)
        history, candidates = obj.get("historyList"), obj.get("itemList")
        if isinstance(history, str):
            history = split_history(history, set(candidates) if isinstance(candidates, list) else set())
    for name, titles in (("historyList", history), ("itemList", candidates)):
        if not isinstance(titles, list) or not titles or not all(isinstance(t, str) and t.strip() for t in titles):
            raise DataError(where, None, name, "expected a non-empty list of non-empty titles")
    if len(set(candidates)) != len(candidates):
        raise DataError(where, None, "itemList", "duplicate candidates")
    return Sample(list(history), list(candidates), candidates[0], None, "request:0")


def run_recommend(cfg: RecommendConfig) -> list[tuple[str, float]]:
    from .modeling import load_codec_of, load_model, pick_device, recorded_domain

    request = read_request(cfg)
    cfg.domain = recorded_domain(cfg.model, cfg.domain)
    codec = load_codec_of(cfg.model, cfg.chat_template)
    require_known_titles(codec, cfg.model, [request], cfg.input or "command line")
    model, codec = load_model(cfg.model, chat_template=cfg.chat_template, codec=codec)
    model.to(pick_device(cfg.device))
    scores = lm_scorer(model, codec, cfg.domain, progress=False, score=cfg.score)([request])[0]
    require_finite(request, scores)
    ranked = sorted(zip(request.candidates, scores), key=lambda x: -x[1])
    ranked = ranked[:cfg.top] if cfg.top else ranked
    if cfg.json:
        print(json.dumps([{"title": t, "score": s} for t, s in ranked], ensure_ascii=False, indent=2))
    else:
        for i, (t, s) in enumerate(ranked, 1):
            print(f"{i:>3}  {s:>10.4f}  {t}")
    return ranked
