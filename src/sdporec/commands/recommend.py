"""`sdporec recommend`: rank candidates for one history with a trained model, or without candidates recommend the
best of the whole catalogue (`RecommendConfig`, `run_recommend`); the ranking itself is
`sdporec.evaluation.recommend.Recommender`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdporec.commands.evaluate import catalogue_question
from sdporec.commands.groups import chat_template_setting, device_setting, trust_remote_code_setting
from sdporec.commands.settings import setting
from sdporec.config import require_device, require_input
from sdporec.data.prompts import DOMAINS, TASKS
from sdporec.data.samples import Sample, split_history
from sdporec.errors import require
from sdporec.evaluation.recommend import Recommender, make_request
from sdporec.evaluation.scoring import SCORES, require_readout_weight
from sdporec.files import read_json_object, read_text, text_lines
from sdporec.models.sources import resolve_model


@dataclass
class RecommendConfig:
    model: str = setting("", "checkpoint directory (full model or LoRA adapter) or hub name")
    history: list[str] = setting([], "titles the user interacted with, oldest first")
    candidates: list[str] = setting(
        [], "titles to rank (none: the best of the whole catalogue but the history and --exclude)"
    )
    input: str = setting(
        "", "a JSON file with 'historyList' and, to rank a list, 'itemList' (instead of the two flags)"
    )
    catalogue: str = setting(
        "",
        "without candidates: the titles to recommend from, one per line (prepare's items.txt); default: the model's "
        "item tokens (the built-in backbone, --item-tokens); required for a model reading titles as text",
    )
    exclude: str = setting("", "without candidates: a file of titles never to recommend, one per line")
    domain: str | None = setting(
        None, "prompt templates to use, template 0 (default: the checkpoint's own, else music)", choices=DOMAINS
    )
    task: str | None = setting(
        None,
        "what the prompt asks: candidates or next-item (default: the task the checkpoint was trained on)",
        choices=TASKS,
    )
    top: int = setting(0, "print only the N best (0: all candidates; without candidates, 10)")
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
            "give either --input or --history (with --candidates to rank a list)",
        )
        require(not self.candidates or bool(self.history), "history", "required with --candidates")
        require(self.top >= 0, "top", "must not be negative")
        require_readout_weight(self.history_readout)

    def resolve(self) -> None:
        for name in ("input", "catalogue", "exclude"):
            require_input(getattr(self, name), name)
        require_device(self.device)
        self.model = resolve_model(self.model)


def read_request(cfg: RecommendConfig) -> Sample:
    """The history and candidates to rank; no candidates (none on the command line, no `itemList` in --input):
    the whole catalogue. An empty list given is an error, as before."""
    if not cfg.input:
        history, candidates, where = cfg.history, cfg.candidates or None, "command line"
    else:
        where = cfg.input
        obj = read_json_object(cfg.input)
        history, candidates = obj.get("historyList"), obj.get("itemList")
        if isinstance(history, str):
            history = split_history(history, set(candidates) if isinstance(candidates, list) else set())
    request = make_request(history, candidates, where)
    for name in ("catalogue", "exclude"):
        require(not (request.candidates and getattr(cfg, name)), name, "applies without candidates only")
    return request


def run_recommend(cfg: RecommendConfig) -> list[tuple[str, float]]:
    request = read_request(cfg)  # checked before the model loads, as is the exclude file
    exclude = [t.strip() for t in text_lines(read_text(cfg.exclude)) if t.strip()] if cfg.exclude else []
    if not request.candidates:
        catalogue_question(cfg.model, cfg.task, cfg.history_readout, cfg.catalogue)
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
        cfg.task,
        cfg.catalogue,
    )
    if request.candidates:
        ranked = recommender.rank_request(request, cfg.top)
    else:
        ranked = recommender.recommend(request.history, cfg.top or 10, exclude)
    if cfg.json:
        print(json.dumps([{"title": t, "score": s} for t, s in ranked], ensure_ascii=False, indent=2))
    else:
        for i, (t, s) in enumerate(ranked, 1):
            print(f"{i:>3}  {s:>10.4f}  {t}")
    return ranked
