"""Which function scores an `AnswerBatch` (format in data/batching.py): the three layouts of `logprobs`, and
the short-answer path that item tokens allow.

With item tokens every answer is one token then EOS, so a candidate list needs only the prompt and each
candidate's one token in a row: the candidate's token is scored from the prompt's last position (one
log-softmax for all N of them) and its EOS from the token's own position. The EOS itself is never an input
(nothing is predicted after it), which the general packed row spends a column on per answer.
"""

from __future__ import annotations

import torch

from sdporec.data.batching import AnswerBatch
from sdporec.models.logprobs import (
    HiddenHead,
    KeptLogits,
    answer_logprobs_cached,
    answer_logprobs_full,
    answer_logprobs_packed,
    label_logprobs,
    maskable,
    pack_rows,
    packed_inputs,
    right_padded_answers,
)

LAYOUTS = ("packed", "cache", "paper")


def answer_logprobs_short(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed layout's numbers (to 1e-5, tested) for answers of at most two tokens -> (log-probs (B, N),
    answer token counts (B, N)): one row per sample, [prompt | each answer's first token], under the packed
    block mask. Longer answers, or attention that does not apply a 4D mask, go to `answer_logprobs_packed`."""
    b, n, a = batch.answer_ids.shape
    if a > 2 or not maskable(model):
        return answer_logprobs_packed(model, batch)
    amask = right_padded_answers(batch)
    assert bool(amask[..., 0].all()), "every answer has a token (see data/batching.py)"
    p = batch.prompt_ids.shape[1]
    firsts = batch.answer_ids[..., :1]
    rows = pack_rows(AnswerBatch(batch.prompt_ids, batch.prompt_mask, firsts, torch.ones_like(firsts)))
    inputs = packed_inputs(model, rows)
    head = HiddenHead.run(model, inputs) or KeptLogits.run(model, inputs, p - 1)
    samples = torch.arange(b, device=firsts.device)
    last = head.logits(samples, torch.full_like(samples, p - 1)).float()             # (B, V): one per prompt
    logps = last.gather(-1, firsts[..., 0]) - torch.logsumexp(last, -1, keepdim=True)  # (B, N)
    if a == 2:   # the second token (EOS), predicted at the first token's own column
        second = amask[..., 1]
        at = samples[:, None].expand(b, n)[second]
        tokens = label_logprobs(head, at, rows.cols[..., 0][second], batch.answer_ids[..., 1][second])
        extra = torch.zeros_like(logps)
        extra[second] = tokens.to(extra.dtype)
        logps = logps + extra
    return logps, amask.sum(-1)


def scoring_layout(name: str, short_answers: bool = False):
    """`packed` (each prompt once, its answers in the same row under a block mask), `cache` (each prompt
    once, its answers on copies of its key/value cache) or `paper` (the prompt repeated for every answer).
    `short_answers` (item tokens: every answer one token then EOS): `packed` runs `answer_logprobs_short`."""
    if name == "packed" and short_answers:
        return answer_logprobs_short
    return {"packed": answer_logprobs_packed, "cache": answer_logprobs_cached, "paper": answer_logprobs_full}[name]
