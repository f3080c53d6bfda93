"""A trained checkpoint that ranks candidate titles for a history (`Recommender`); the `sdporec recommend`
command is `sdporec.commands.recommend`."""

from __future__ import annotations

from collections.abc import Sequence

from sdporec.config import require_device
from sdporec.data.codec import CHAT_CHOICES, require_known_titles
from sdporec.data.prompts import DOMAINS
from sdporec.data.samples import Sample
from sdporec.errors import DataError, require
from sdporec.evaluation.scoring import SCORES, LMScorer, require_finite, require_readout_weight
from sdporec.models.sources import remote_code, resolve_model


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
    ) -> Recommender:
        """A checkpoint directory (full model or LoRA adapter) or hub name; `domain`: prompt templates (default:
        those it was trained with); `score`: a candidate's answer log-probs summed or averaged per token;
        `history_readout`: λ, as `evaluate`'s (None: the one its training chose on validation, recorded in the
        checkpoint, else 0); `samples`: requests whose titles are checked before the weights load;
        `trust_remote_code`: let a model of a type transformers does not know run its own code (never by default)."""
        from sdporec.models.loading import load_for_inference, quiet_transformers

        require(score in SCORES, "score", f"one of {', '.join(SCORES)}")
        require_readout_weight(history_readout)
        require(chat_template in CHAT_CHOICES, "chat_template", f"one of {', '.join(CHAT_CHOICES)}")
        require(domain is None or domain in DOMAINS, "domain", f"one of {', '.join(DOMAINS)}")
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
            )
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
