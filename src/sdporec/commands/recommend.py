"""`sdporec recommend`: rank candidates for one history with a trained model (`RecommendConfig`,
`run_recommend`); the ranking itself is `sdporec.evaluation.recommend.Recommender`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdporec.commands.groups import chat_template_setting, device_setting, trust_remote_code_setting
from sdporec.commands.settings import setting
from sdporec.config import require_device, require_input
from sdporec.data.prompts import DOMAINS
from sdporec.data.samples import Sample, split_history
from sdporec.errors import require
from sdporec.evaluation.recommend import Recommender, make_request
from sdporec.evaluation.scoring import SCORES, require_readout_weight
from sdporec.files import read_json_object
from sdporec.models.sources import resolve_model


@dataclass
class RecommendConfig:
    model: str = setting("", "checkpoint directory (full model or LoRA adapter) or hub name")
    history: list[str] = setting([], "titles the user interacted with, oldest first")
    candidates: list[str] = setting([], "titles to rank")
    input: str = setting("", "a JSON file with 'historyList' and 'itemList' (instead of the two flags)")
    domain: str | None = setting(
        None, "prompt templates to use, template 0 (default: the checkpoint's own, else music)", choices=DOMAINS
    )
    top: int = setting(0, "print only the N best (0: all)")
    json: bool = setting(False, "print JSON instead of a table")
    score: str = setting(
        "sum", "a candidate's score: the sum or the per-token mean of its answer's log-probs", choices=SCORES
    )
    history_readout: float | None = setting(
        None,
        "weight λ in [0, 1] of the history readout, as `evaluate "
        "--history-readout`: score = (1 - λ) x answer log-prob + λ x the title's "
        "log-prob after the history alone (default: the λ recorded in the "
        "checkpoint, else 0)",
    )
    chat_template: str = chat_template_setting()
    trust_remote_code: bool = trust_remote_code_setting()
    device: str = device_setting()

    def check(self) -> None:
        require(bool(self.model), "model", "required")
        require(
            bool(self.input) != bool(self.history or self.candidates),
            "input",
            "give either --input or both --history and --candidates",
        )
        require(self.top >= 0, "top", "must not be negative")
        require_readout_weight(self.history_readout)

    def resolve(self) -> None:
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


def run_recommend(cfg: RecommendConfig) -> list[tuple[str, float]]:
    request = read_request(cfg)  # checked before the model loads
    recommender = Recommender.load(
        cfg.model,
        cfg.domain,
        cfg.score,
        cfg.chat_template,
        cfg.device,
        cfg.history_readout,
        [request],
        cfg.input or "command line",
        cfg.trust_remote_code,
    )
    ranked = recommender.rank_request(request, cfg.top)
    if cfg.json:
        print(json.dumps([{"title": t, "score": s} for t, s in ranked], ensure_ascii=False, indent=2))
    else:
        for i, (t, s) in enumerate(ranked, 1):
            print(f"{i:>3}  {s:>10.4f}  {t}")
    return ranked
