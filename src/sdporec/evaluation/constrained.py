"""Constrained generation (`evaluate --protocol generation --constrained`): greedy decoding that can only produce
one of the sample's candidate answers, token by token, through transformers' `prefix_allowed_tokens_fn`.

Each sample's candidates are encoded as the model is trained to answer (`codec.encode_answer`: the title's tokens,
then EOS; with item tokens, the item's token, then EOS) and kept in a token trie; at each step only the tokens that
continue some candidate's answer are allowed, so every answer is a candidate (ValidRatio 1 by construction) and
which candidate is read from the tokens themselves, not by searching the decoded text. With N beams (beam search
inside the trie) each row also keeps the N candidates in the beams' order, a top-N list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.metrics import beam_hits, generation_metrics
from sdporec.evaluation.scoring import generation_row, prompt_batches
from sdporec.processes import several_processes


class AnswerTrie:
    """Token sequences (one per title) as a trie: the tokens allowed after a prefix, and the title a whole
    sequence spells. Each node counts the titles below it, so a row may be barred from some titles (`barred`: a
    user's history) by counting them off on their paths, without a trie of its own."""

    def __init__(self, answers: Iterable[tuple[str, Sequence[int]]]):
        self.root: dict = {}
        self.below: dict[int, int] = {}  # id(node) -> titles ending at or below it
        self.paths: dict[str, list[dict]] = {}
        self.longest = 0
        for title, ids in answers:
            node, path = self.root, [self.root]
            for token in ids:
                node = node.setdefault(int(token), {})
                path.append(node)
            if None not in node:
                node[None] = title  # the title ends here (its last token, EOS, taken)
                self.paths[title] = path
                for n in path:
                    self.below[id(n)] = self.below.get(id(n), 0) + 1
            self.longest = max(self.longest, len(ids))

    def _node(self, prefix: Sequence[int]) -> dict | None:
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return node

    def barred(self, titles: Iterable[str]) -> dict[int, int]:
        """id(node) -> how many of `titles` end at or below it: what `allowed` subtracts."""
        out: dict[int, int] = {}
        for title in set(titles):
            for n in self.paths.get(title, ()):
                out[id(n)] = out.get(id(n), 0) + 1
        return out

    def allowed(self, prefix: Sequence[int], barred: dict[int, int] | None = None) -> list[int]:
        """The tokens that continue some answer after `prefix` ([] once an answer is complete), leaving out those
        whose every title is `barred`."""
        node = self._node(prefix)
        if not node:
            return []
        barred = barred or {}
        return [t for t, n in node.items() if t is not None and self.below[id(n)] > barred.get(id(n), 0)]

    def title(self, ids: Sequence[int]) -> str | None:
        """The title whose whole answer `ids` starts with (None: no complete answer)."""
        node = self.root
        for token in ids:
            if None in node:
                break
            node = node.get(int(token))
            if node is None:
                return None
        return node.get(None)


class CandidateConstraint:
    """`prefix_allowed_tokens_fn` for one generation batch: row i may only spell one of its titles (sample i's
    candidates, or a catalogue's titles but sample i's history). `prompt_length` is the (padded) prompt's length,
    after which the generated tokens start; a row that has finished may only go on with `filler` (what `generate`
    pads finished rows with)."""

    def __init__(self, rows: Sequence[tuple[AnswerTrie, dict[int, int]]], prompt_length: int, filler: int):
        self.rows, self.prompt_length, self.filler = list(rows), prompt_length, filler
        self.longest = max(trie.longest for trie, _ in self.rows)

    @classmethod
    def of_candidates(cls, codec, samples: Sequence[Sample], prompt_length: int, filler: int) -> CandidateConstraint:
        tries = [AnswerTrie((c, codec.encode_answer(c)) for c in s.candidates) for s in samples]
        return cls([(trie, {}) for trie in tries], prompt_length, filler)

    @classmethod
    def of_catalogue(
        cls, trie: AnswerTrie, samples: Sequence[Sample], prompt_length: int, filler: int
    ) -> CandidateConstraint:
        """Any title of the catalogue's `trie` but the sample's history (the target stays, as the ranking has it)."""
        return cls([(trie, trie.barred(set(s.history) - {s.target})) for s in samples], prompt_length, filler)

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        trie, barred = self.rows[batch_id]
        allowed = trie.allowed(input_ids[self.prompt_length :].tolist(), barred)
        return allowed or [self.filler]

    def answer(self, batch_id: int, generated: Sequence[int]) -> str | None:
        return self.rows[batch_id][0].title(generated)


def generate_constrained(
    model,
    codec,
    samples: Sequence[Sample],
    domain: str,
    batch_size: int,
    beams: int = 1,
    template: int = 0,
    progress: bool = True,
    task: str = "candidates",
    catalogue: Catalogue | None = None,
) -> tuple[dict, list[dict]]:
    """Greedy (or beam) decoding through each sample's `CandidateConstraint`, each answer decoded to its end:
    among the sample's candidates, or with a `catalogue` among its titles but the history. Metrics: HR@1 and
    ValidRatio as the paper's protocol counts them (valid: 1 by construction), and HR@5, HR@10 where there are
    at least 5, 10 beams (the target among the first five, ten)."""
    model.eval()
    rows: list[dict] = []
    trie = None if catalogue is None else AnswerTrie((t, codec.encode_answer(t)) for t in catalogue.titles)
    with torch.no_grad():
        device = next(model.parameters()).device
        for chunk, batch in prompt_batches(codec, samples, domain, batch_size, device, template, progress, task):
            length = batch.prompt_ids.shape[1]
            if trie is None:
                constraint = CandidateConstraint.of_candidates(codec, chunk, length, codec.pad_id)
            else:
                constraint = CandidateConstraint.of_catalogue(trie, chunk, length, codec.pad_id)
            generated = model.generate(
                input_ids=batch.prompt_ids,
                attention_mask=batch.prompt_mask,
                synced_gpus=several_processes(),
                do_sample=False,
                num_beams=beams,
                num_return_sequences=beams,
                max_new_tokens=constraint.longest,
                pad_token_id=codec.pad_id,
                eos_token_id=codec.eos_id,
                prefix_allowed_tokens_fn=constraint,
            )[:, length:].tolist()
            for i, s in enumerate(chunk):
                found = [constraint.answer(i, ids) for ids in generated[i * beams : (i + 1) * beams]]
                row = generation_row(s, codec.decode(generated[i * beams]), found[0])
                if catalogue is not None:  # how many titles it could name: `compare` pairs it with catalogue runs
                    row["catalogue"] = len(catalogue) - len(set(s.history) - {s.target} & set(catalogue.index))
                rows.append(row | ({"beams": found} if beams > 1 else {}))
    metrics = generation_metrics([r["answer"] for r in rows], [s.target for s in samples])
    return metrics | beam_hits(rows), rows
