"""A language model ranking the whole catalogue (`evaluate --candidates all`, `Recommender.recommend`): the
`CatalogueScorer` of an `LMScorer`, its prompts, score and history readout as the ranking protocol has them.

Item tokens (the built-in backbone, `--item-tokens`): every item is one token, so the logits at the prompt's last
position score every item in one forward pass per batch of prompts, no dearer than one candidate list. The score
is log p(item | prompt): the EOS that ends the ranking protocol's answer is left out, since its log-prob needs the
item at the next position, one more token per item (N times the prompt's work for a catalogue of N). With
`score="answer"` (`evaluate --catalogue-score answer`) the item's whole answer is scored, item then EOS, as text
titles are below.

Text titles: every title's answer (its tokens then EOS, as the ranking protocol scores it) runs on the prompt's
key/value cache, the prompt computed once per sample and the titles taken `chunk` at a time (the chunk's logits
bound the memory), the cache cut back to the prompt after each chunk. A model whose cache cannot be copied and cut
(none returned, sliding-window or linear-attention layers) runs the prompt again for every chunk, through the
ranking protocol's own layout, with the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sdporec.data.batching import IGNORE, collate
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, DataError
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.scoring import LMScorer
from sdporec.models.logprobs import cache_kwarg, real_positions

CHUNK = 64  # titles per forward pass on a text model's prompt cache
# What an item-token model's catalogue score is: log p(item | prompt) from one pass, or its whole answer's (item,
# then EOS), as a list's candidates are scored, at the cost of every item's answer on the prompt's cache.
CATALOGUE_SCORES = ("item", "answer")


def item_ids(codec, catalogue: Catalogue) -> list[int] | None:
    """Each catalogue title's item token, for a codec with one per item (None: titles are text). A title the
    codec has no token for is a `DataError` naming the catalogue's source."""
    if not hasattr(codec, "title_id"):
        return None
    unknown = next((t for t in catalogue.titles if not codec.knows(t)), None)
    if unknown is not None:
        raise DataError(
            catalogue.source,
            None,
            None,
            f"title {unknown!r} has no item token in the model (it ranks the items it was trained with)",
        )
    return [codec.title_id(t) for t in catalogue.titles]


class LMCatalogue:
    """`scorer`'s model over a whole catalogue: (samples x items) scores, `(1 - λ) x` the prompt's `+ λ x` the
    history readout's (`scorer.history_readout`)."""

    def __init__(self, scorer: LMScorer, chunk: int = CHUNK, score: str = "item"):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        if score not in CATALOGUE_SCORES:
            raise ValueError(f"score must be one of {CATALOGUE_SCORES}, got {score!r}")
        self.scorer, self.chunk, self.score = scorer, chunk, score
        # The last catalogue's item tokens and encoded answers: `evaluate_catalogue` asks batch after batch.
        self._catalogue: Catalogue | None = None
        self._ids: list[int] | None = None
        self._answers: dict[str, list[list[int]]] = {}

    def __call__(self, samples: Sequence[Sample], catalogue: Catalogue) -> torch.Tensor:
        scorer, codec = self.scorer, self.scorer.codec
        w = scorer.history_readout
        if catalogue is not self._catalogue:  # a title without an item token is a DataError here, before any pass
            self._ids, self._answers, self._catalogue = item_ids(codec, catalogue), {}, catalogue
        ids = self._ids
        model = scorer.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                prompt = history = 0.0
                if w < 1:  # "answer": item tokens too score their whole answers, item then EOS
                    prompts = [scorer.prompt(s) for s in samples]
                    prompt = self.scores(
                        prompts, None if self.score == "answer" else ids, catalogue, codec.encode_answer
                    )
                if w > 0:
                    prompts = [codec.encode_history(s.history, IGNORE)[0] for s in samples]
                    history = self.scores(prompts, ids, catalogue, codec.encode_next_title)
        finally:
            model.train(was_training)
        return (1 - w) * prompt + w * history

    def scores(self, prompts: list[list[int]], ids: list[int] | None, catalogue: Catalogue, encode) -> torch.Tensor:
        """Every item's score after each prompt: from its item token (`ids`), or its answer's tokens (`encode`)."""
        if ids is not None:
            return self.item_scores(prompts, ids)
        if encode.__name__ not in self._answers:  # emptied by `__call__` when the catalogue changes
            self._answers[encode.__name__] = [encode(t) for t in catalogue.titles]
        answers = self._answers[encode.__name__]
        return torch.stack([self.text_scores(p, answers) for p in prompts])

    def item_scores(self, prompts: list[list[int]], ids: list[int]) -> torch.Tensor:
        """log p(item | prompt) of every item, `batch_size` prompts per forward pass."""
        model, codec = self.scorer.model, self.scorer.codec
        device = next(model.parameters()).device
        columns = torch.tensor(ids, device=device)
        out = []
        for start in range(0, len(prompts), self.scorer.batch_size):
            part = prompts[start : start + self.scorer.batch_size]
            batch = collate(part, [[[codec.eos_id]] for _ in part], codec.pad_id).to(device)
            logits = (
                model(
                    input_ids=batch.prompt_ids,
                    attention_mask=batch.prompt_mask,
                    position_ids=real_positions(batch.prompt_mask),
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            out.append(logits[:, columns] - torch.logsumexp(logits, -1, keepdim=True))
        return torch.cat(out).cpu()

    def text_scores(self, prompt: list[int], answers: list[list[int]]) -> torch.Tensor:
        """Every answer's summed log-prob after `prompt` (per token with score `mean`), the prompt run once."""
        model = self.scorer.model
        device = next(model.parameters()).device
        out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        name, cache = cache_kwarg(out)
        size = min(self.chunk, len(answers))
        try:
            cache.batch_repeat_interleave(size)
            sums = []
            for start in range(0, len(answers), size):
                part = answers[start : start + size]
                padded = part + [part[0]] * (size - len(part))
                sums.append(self._continuations(padded, first, len(prompt), name, cache)[: len(part)])
                cache.crop(-max(map(len, padded)))  # a negative count removes that many tokens in every version
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            # No cache to copy and cut (none returned, sliding-window or linear-attention layers): each chunk
            # is scored with its own copy of the prompt, the same numbers at more cost.
            return self.uncached(prompt, answers)
        logps = torch.cat(sums)
        if self.scorer.score == "mean":
            logps = logps / torch.tensor([len(a) for a in answers], dtype=logps.dtype, device=logps.device)
        return logps.cpu()

    def uncached(self, prompt: list[int], answers: list[list[int]]) -> torch.Tensor:
        """`text_scores` through the scorer's own layout, `chunk` answers with each run of the prompt."""
        size = self.chunk
        chunks = [answers[i : i + size] for i in range(0, len(answers), size)]
        return torch.tensor([x for part in chunks for x in self.scorer.answer_scores([prompt], [part])[0]])

    def _continuations(self, part: list[list[int]], first: torch.Tensor, length: int, name: str, cache):
        """The answers of `part` (one per row of the cache) run on the prompt's cache -> their summed log-probs."""
        model, pad = self.scorer.model, self.scorer.codec.pad_id
        device = first.device
        longest = max(map(len, part))
        ids = torch.tensor([a + [pad] * (longest - len(a)) for a in part], device=device)
        mask = torch.tensor([[1] * len(a) + [0] * (longest - len(a)) for a in part], device=device)
        logits = (
            model(
                input_ids=ids,
                attention_mask=torch.cat([torch.ones(len(part), length, dtype=mask.dtype, device=device), mask], 1),
                position_ids=length + torch.arange(longest, device=device).expand(len(part), -1),
                use_cache=True,
                **{name: cache},
            )
            .logits[:, :-1]
            .float()
        )
        later = logits.gather(-1, ids[:, 1:, None])[..., 0] - torch.logsumexp(logits, -1)
        return first[ids[:, 0]] + (later * mask[:, 1:]).sum(-1)


def model_catalogue(codec, model: str) -> Catalogue:
    """The catalogue a model ranks unless told (`--catalogue`): the titles of its item tokens; a model reading
    titles as text has none of its own."""
    titles = codec.item_titles()
    if titles is None:
        raise ConfigError(
            f"setting 'catalogue': {model} reads titles as text, so it has no catalogue of its own; give the titles "
            "to rank with --catalogue FILE, one per line (`prepare` writes items.txt)"
        )
    return Catalogue(titles, f"the item tokens of {model}")
