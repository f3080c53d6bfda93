"""The batch format, documented here once ("layout" in sdporec names only the scoring layout: packed,
cache or paper, `scoring.scoring_layout`).

Every model call in sdporec (SFT, DPO/S-DPO, the reference pass, ranking evaluation) takes an
`AnswerBatch`: B prompts, each with N answers to score.

    prompt_ids   (B, P)     token ids, LEFT-padded with pad_id, so every prompt ends at column P-1
    prompt_mask  (B, P)     1 on real tokens
    answer_ids   (B, N, A)  token ids, RIGHT-padded with pad_id; each answer is title tokens + EOS
    answer_mask  (B, N, A)  1 on real tokens

Answer slot n means:
    training (SFT, N = 1):         n = 0 is the target
    training (DPO/S-DPO, N = 1+K): n = 0 is the chosen (target) answer, n = 1..K the K negatives
    scoring (ranking):             n = the candidate's position in the prompt's list

Preference batches may also carry `reference_logps (B, 1+K)`, precomputed by the reference pass. SFT batches
with a history loss (`--history-weight`) carry each sample's history as its own short sequence:

    history_ids     (B, H)  the history's titles in order (after BOS), RIGHT-padded with pad_id
    history_mask    (B, H)  1 on real tokens
    history_labels  (B, H)  the token ids of the 2nd to last title where they stand, IGNORE elsewhere
                            (the first title has nothing before it to be predicted from)

With the history loss inside the prompt (`--history-in prompt`) they carry labels on the prompt instead:

    prompt_labels   (B, P)  aligned with prompt_ids (LEFT-padded the same way): the token ids of the 2nd to
                            last history title where they stand in the prompt, IGNORE elsewhere

`split_chosen_rejected` is the one place that takes training's answer slots apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# The label of a position that is not scored (the value torch's cross-entropy ignores by default).
IGNORE = -100


@dataclass
class AnswerBatch:
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    answer_ids: torch.Tensor
    answer_mask: torch.Tensor
    reference_logps: torch.Tensor | None = None
    history_ids: torch.Tensor | None = None
    history_mask: torch.Tensor | None = None
    history_labels: torch.Tensor | None = None
    prompt_labels: torch.Tensor | None = None

    def to(self, device) -> AnswerBatch:
        return AnswerBatch(
            *(
                None if t is None else t.to(device)
                for t in (
                    self.prompt_ids,
                    self.prompt_mask,
                    self.answer_ids,
                    self.answer_mask,
                    self.reference_logps,
                    self.history_ids,
                    self.history_mask,
                    self.history_labels,
                    self.prompt_labels,
                )
            )
        )

    def with_prompt_labels(self, labels: Sequence[Sequence[int]], ignore: int) -> AnswerBatch:
        """This batch with `prompt_labels`, one list per prompt as long as its ids, left-padded like them."""
        self.prompt_labels = torch.full(self.prompt_ids.shape, ignore, dtype=torch.long)
        p = self.prompt_ids.shape[1]
        for i, row in enumerate(labels):
            assert len(row) == int(self.prompt_mask[i].sum()), "one label per prompt token"
            self.prompt_labels[i, p - len(row) :] = torch.tensor(row, dtype=torch.long)
        return self

    def with_histories(
        self, histories: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, ignore: int
    ) -> AnswerBatch:
        """This batch with `history_*` filled from one (ids, labels) pair per sample (`encode_history`)."""
        h = max(len(ids) for ids, _ in histories)
        self.history_ids = torch.full((len(histories), h), pad_id, dtype=torch.long)
        self.history_mask = torch.zeros((len(histories), h), dtype=torch.long)
        self.history_labels = torch.full((len(histories), h), ignore, dtype=torch.long)
        for i, (ids, labels) in enumerate(histories):
            self.history_ids[i, : len(ids)] = torch.tensor(ids)
            self.history_mask[i, : len(ids)] = 1
            self.history_labels[i, : len(labels)] = torch.tensor(labels)
        return self

    @property
    def n_answers(self) -> int:
        return self.answer_ids.shape[1]


def collate(prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[Sequence[int]]], pad_id: int) -> AnswerBatch:
    """prompts: B token lists; answers: B lists of N token lists (the same N for every prompt)."""
    n = len(answers[0])
    if any(len(a) != n for a in answers):
        raise ValueError("every prompt in a batch needs the same number of answers")
    b, p = len(prompts), max(len(x) for x in prompts)
    a = max(len(y) for ans in answers for y in ans)
    prompt_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    answer_ids = torch.full((b, n, a), pad_id, dtype=torch.long)
    answer_mask = torch.zeros((b, n, a), dtype=torch.long)
    for i, x in enumerate(prompts):
        prompt_ids[i, p - len(x) :] = torch.tensor(x)
        prompt_mask[i, p - len(x) :] = 1
        for j, y in enumerate(answers[i]):
            answer_ids[i, j, : len(y)] = torch.tensor(y)
            answer_mask[i, j, : len(y)] = 1
    return AnswerBatch(prompt_ids, prompt_mask, answer_ids, answer_mask)


def same_answer_count(answers: Sequence[Sequence[Sequence[int]]], pad_id: int) -> list[list[list[int]]]:
    """Prompts with fewer answers get padding answers (`[pad_id]`, scored and then not used), so that every
    prompt of a batch has the same N."""
    n = max(len(a) for a in answers)
    return [list(a) + [[pad_id]] * (n - len(a)) for a in answers]


def split_chosen_rejected(logps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1+K) answer log-probs in training's slot order -> chosen (B,), rejected (B, K)."""
    assert logps.dim() == 2 and logps.shape[1] == 1 + k, f"expected (B, 1+{k}), got {tuple(logps.shape)}"
    return logps[:, 0], logps[:, 1:]
