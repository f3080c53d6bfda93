"""A trained checkpoint that ranks candidate titles for a history, or recommends from the whole catalogue
(`Recommender`); the `sdporec recommend` command is `sdporec.commands.recommend`."""

from __future__ import annotations

from collections.abc import Sequence

from sdporec.config import require_device
from sdporec.data.codec import CHAT_CHOICES, require_known_titles
from sdporec.data.prompts import DOMAINS, TASKS
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, DataError, require
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.lm_catalogue import LMCatalogue, item_ids, model_catalogue
from sdporec.evaluation.scoring import SCORES, LMScorer, require_finite, require_readout_weight
from sdporec.models.sources import remote_code, resolve_model


def make_request(history, candidates, where: str) -> Sample:
    """A history and candidates to rank (None: the whole catalogue), checked, as a sample (its target unused)."""
    lists = (("historyList", history),) + ((("itemList", candidates),) if candidates is not None else ())
    for name, titles in lists:
        if not isinstance(titles, list) or not titles or not all(isinstance(t, str) and t.strip() for t in titles):
            raise DataError(where, None, name, "expected a non-empty list of non-empty titles")
    if candidates is None:
        return Sample(list(history), [], history[-1], None, "request:0")
    if len(set(candidates)) != len(candidates):
        raise DataError(where, None, "itemList", "duplicate candidates")
    return Sample(list(history), list(candidates), candidates[0], None, "request:0")


class Recommender:
    """A trained checkpoint that ranks candidate titles for a history (`rank`), or recommends the best of the
    whole catalogue (`recommend`) (`Recommender.load(path)`)."""

    def __init__(
        self,
        model,
        codec,
        path: str,
        domain: str,
        score: str = "sum",
        history_readout: float = 0.0,
        task: str = "candidates",
        catalogue: Catalogue | None = None,
    ):
        self.model, self.codec, self.path, self.domain, self.task = model, codec, path, domain, task
        self.scorer = LMScorer(
            model, codec, domain, progress=False, score=score, history_readout=history_readout, task=task
        )
        self.catalogue = catalogue
        self.ranker = LMCatalogue(self.scorer)  # keeps the catalogue's encoded titles from one call to the next

    @classmethod
    def load(
        cls,
        path: str,
        domain: str | None = None,
        score: str = "sum",
        chat_template: str = "auto",
        device: str = "auto",
        history_readout: float | None = None,
        samples: Sequence[Sample] = (),
        samples_from: str = "",
        trust_remote_code: bool = False,
        task: str | None = None,
        catalogue: str = "",
    ) -> Recommender:
        """A checkpoint directory (full model or LoRA adapter) or hub name; `domain`: prompt templates (default:
        those it was trained with); `score`: a candidate's answer log-probs summed or averaged per token;
        `history_readout`: λ, as `evaluate`'s (None: the one its training chose on validation, recorded in the
        checkpoint, else 0); `samples`: requests whose titles are checked before the weights load;
        `trust_remote_code`: let a model of a type transformers does not know run its own code (never by default);
        `task`: what its prompts ask (default: what it was trained on); `catalogue`: a file of the titles
        `recommend` ranks, one per line (default: the model's item tokens)."""
        from sdporec.models.loading import load_for_inference, quiet_transformers

        require(score in SCORES, "score", f"one of {', '.join(SCORES)}")
        require_readout_weight(history_readout)
        require(chat_template in CHAT_CHOICES, "chat_template", f"one of {', '.join(CHAT_CHOICES)}")
        require(domain is None or domain in DOMAINS, "domain", f"one of {', '.join(DOMAINS)}")
        require(task is None or task in TASKS, "task", f"one of {', '.join(TASKS)}")
        items = Catalogue.read(catalogue) if catalogue else None
        require_device(device)
        path = resolve_model(path)
        quiet_transformers()
        with remote_code(trust_remote_code):
            loaded = load_for_inference(
                path,
                domain=domain,
                history_readout=history_readout,
                chat_template=chat_template,
                device=device,
                samples=samples,
                samples_from=samples_from,
                task=task,
            )
        items = items or (model_catalogue(loaded.codec, path) if loaded.codec.item_titles() else None)
        if items is not None:
            item_ids(loaded.codec, items)  # with item tokens, every title one of the model's
        return cls(loaded.model, loaded.codec, path, loaded.domain, score, loaded.history_readout, loaded.task, items)

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

    def recommend(self, history: list[str], top: int = 10, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The `top` best titles of the whole catalogue for `history` (oldest first), as (title, score), best
        first: every catalogue title but the history and `exclude`, scored as `evaluate --candidates all` scores
        them. A model trained on the list task is asked with its history readout (λ 1) or the next-item prompt."""
        request = make_request(history, None, "history")
        if self.catalogue is None:
            raise ConfigError(
                f"setting 'catalogue': {self.path} reads titles as text, so it has no catalogue of its own; give "
                "the titles to recommend from (catalogue=FILE, `recommend --catalogue FILE`: one title per line)"
            )
        require(
            self.task == "next-item" or self.scorer.history_readout == 1,
            "candidates",
            f"{self.path} was trained to pick from listed candidates (task candidates); give candidates, rank by "
            "its history readout (history_readout=1), or ask the next-item question (task='next-item')",
        )
        require(top >= 1, "top", "must be at least 1")
        require(not isinstance(exclude, str), "exclude", "a list of titles, not one string")
        self.catalogue.require_known([request], "history")
        scores = self.ranker([request], self.catalogue)[0]
        require_finite(Sample(history, self.catalogue.titles, history[-1]), scores.tolist())
        banned = set(history) | set(exclude)
        ranked = [(t, float(s)) for t, s in zip(self.catalogue.titles, scores.tolist()) if t not in banned]
        return sorted(ranked, key=lambda x: -x[1])[:top]
