"""`sdporec recommend`: rank candidates for one history with a trained model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sdporec.config import require_device, require_input, setting
from sdporec.data.codec import CHAT_CHOICES, require_known_titles
from sdporec.data.prompts import DOMAINS
from sdporec.data.samples import Sample, split_history
from sdporec.errors import DataError, require
from sdporec.evaluation.evaluate import SCORES, LMScorer, require_finite
from sdporec.files import read_json_object
from sdporec.models.sources import resolve_model


@dataclass
class RecommendConfig:
    model: str = setting("", "checkpoint directory (full model or LoRA adapter) or hub name")
    history: list[str] = setting([], "titles the user interacted with, oldest first")
    candidates: list[str] = setting([], "titles to rank")
    input: str = setting("", "a JSON file with 'historyList' and 'itemList' (instead of the two flags)")
    domain: str | None = setting(None, "prompt templates to use, template 0 (default: the checkpoint's own, else "
                             "music)", choices=DOMAINS)
    top: int = setting(0, "print only the N best (0: all)")
    json: bool = setting(False, "print JSON instead of a table")
    score: str = setting("sum", "a candidate's score: the sum or the per-token mean of its answer's log-probs",
                     choices=SCORES)
    history_readout: float | None = setting(None, "weight λ in [0, 1] of the history readout, as `evaluate "
                                            "--history-readout`: score = (1 - λ) x answer log-prob + λ x the title's "
                                            "log-prob after the history alone (default: the λ recorded in the "
                                            "checkpoint, else 0)")
    chat_template: str = setting("auto", "text prompts in the tokenizer's chat template: auto (what the checkpoint "
                             "was trained with; else on where the tokenizer has one), on or off",
                             choices=CHAT_CHOICES)
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")

    def validate(self) -> None:
        require(bool(self.model), "model", "required")
        require(bool(self.input) != bool(self.history or self.candidates), "input",
                "give either --input or both --history and --candidates")
        require(self.top >= 0, "top", "must not be negative")
        require(self.history_readout is None or 0 <= self.history_readout <= 1, "history_readout",
                "must be in [0, 1]")
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
    return make_request(history, candidates, where)


def make_request(history, candidates, where: str) -> Sample:
    """A history and candidates to rank, checked, as a sample (its target unused)."""
    for name, titles in (("historyList", history), ("itemList", candidates)):
        if not isinstance(titles, list) or not titles or not all(isinstance(t, str) and t.strip() for t in titles):
            raise DataError(where, None, name, "expected a non-empty list of non-empty titles")
    if len(set(candidates)) != len(candidates):
        raise DataError(where, None, "itemList", "duplicate candidates")
    return Sample(list(history), list(candidates), candidates[0], None, "request:0")


class Recommender:
    """A trained checkpoint that ranks candidate titles for a history (`Recommender.load(path)`)."""

    def __init__(self, model, codec, path: str, domain: str, score: str = "sum", history_readout: float = 0.0):
        self.model, self.codec, self.path, self.domain = model, codec, path, domain
        self.scorer = LMScorer(model, codec, domain, progress=False, score=score, history_readout=history_readout)

    @classmethod
    def load(cls, path: str, domain: str | None = None, score: str = "sum", chat_template: str = "auto",
             device: str = "auto", history_readout: float | None = None, samples: Sequence[Sample] = (),
             samples_from: str = "") -> Recommender:
        """A checkpoint directory (full model or LoRA adapter) or hub name; `domain`: prompt templates (default:
        those it was trained with); `score`: a candidate's answer log-probs summed or averaged per token;
        `history_readout`: λ, as `evaluate`'s (None: the one its training chose on validation, recorded in the
        checkpoint, else 0); `samples`: requests whose titles are checked before the weights load."""
        from sdporec.models.loading import load_for_inference, quiet_transformers

        require(score in SCORES, "score", f"one of {', '.join(SCORES)}")
        require(history_readout is None or 0 <= history_readout <= 1, "history_readout", "must be in [0, 1]")
        require(chat_template in CHAT_CHOICES, "chat_template", f"one of {', '.join(CHAT_CHOICES)}")
        require(domain is None or domain in DOMAINS, "domain", f"one of {', '.join(DOMAINS)}")
        require_device(device)
        path = resolve_model(path)
        quiet_transformers()
        loaded = load_for_inference(path, domain=domain, history_readout=history_readout,
                                    chat_template=chat_template, device=device, samples=samples,
                                    samples_from=samples_from)
        return cls(loaded.model, loaded.codec, path, loaded.domain, score, loaded.history_readout)

    def rank(self, history: list[str], candidates: list[str], top: int = 0) -> list[tuple[str, float]]:
        """(title, score) of each candidate, best first (`top`: only the N best); the score is the model's
        log-probability of the title as the answer (mixed with the history readout's where asked). Titles must
        be ones the checkpoint knows."""
        request = make_request(history, candidates, "history/candidates")
        require_known_titles(self.codec, self.path, [request], "history/candidates")
        return self.rank_request(request, top)

    def rank_request(self, request: Sample, top: int = 0) -> list[tuple[str, float]]:
        """`rank` of a request already checked (`make_request`, titles known to the checkpoint)."""
        scores = self.scorer([request])[0]
        require_finite(request, scores)
        ranked = sorted(zip(request.candidates, scores), key=lambda x: -x[1])
        return ranked[:top] if top else ranked


def run_recommend(cfg: RecommendConfig) -> list[tuple[str, float]]:
    request = read_request(cfg)   # checked before the model loads
    recommender = Recommender.load(cfg.model, cfg.domain, cfg.score, cfg.chat_template, cfg.device,
                                   cfg.history_readout, [request], cfg.input or "command line")
    ranked = recommender.rank_request(request, cfg.top)
    if cfg.json:
        print(json.dumps([{"title": t, "score": s} for t, s in ranked], ensure_ascii=False, indent=2))
    else:
        for i, (t, s) in enumerate(ranked, 1):
            print(f"{i:>3}  {s:>10.4f}  {t}")
    return ranked
