"""Which function scores an `AnswerBatch` (format in data/batching.py): the layouts of `logprobs` (`flex` is the
packed layout with its mask as a FlexAttention BlockMask, `models/flex.py`), the short-answer path that item
tokens allow, and `auto`, the layout measured fastest on the device type.

With item tokens every answer is one token then EOS, so a candidate list needs only the prompt and each
candidate's one token in a row: the candidate's token is scored from the prompt's last position (one
log-softmax for all N of them) and its EOS from the token's own position. The EOS itself is never an input
(nothing is predicted after it), which the general packed row spends a column on per answer.
"""

from __future__ import annotations

import warnings

import torch

from sdporec.data.batching import AnswerBatch
from sdporec.models import flex
from sdporec.models.heads import HiddenHead, KeptLogits, causal_lm, label_logprobs
from sdporec.models.logprobs import (
    answer_logprobs_cached,
    answer_logprobs_full,
    answer_logprobs_packed,
    maskable,
    pack_rows,
    packed_inputs,
    right_padded_answers,
)

LAYOUTS = ("auto", "packed", "flex", "cache", "paper")

# `auto`'s choice per device type, each the fastest measured there (docs/speed.md for CPUs; for CUDA the 1B
# checks in docs/gpu/, where the paper layout ran 3-5x the dense-mask packed one at batch 8). Device types
# never measured take the paper layout, which needs no custom mask from any attention kernel.
FASTEST = {"cpu": "packed", "cuda": "paper"}


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
    last = head.logits(samples, torch.full_like(samples, p - 1)).float()  # (B, V): one per prompt
    logps = last.gather(-1, firsts[..., 0]) - torch.logsumexp(last, -1, keepdim=True)  # (B, N)
    if a == 2:  # the second token (EOS), predicted at the first token's own column
        second = amask[..., 1]
        at = samples[:, None].expand(b, n)[second]
        tokens = label_logprobs(head, at, rows.cols[..., 0][second], batch.answer_ids[..., 1][second])
        extra = torch.zeros_like(logps)
        extra[second] = tokens.to(extra.dtype)
        logps = logps + extra
    return logps, amask.sum(-1)


def resolve_layout(name: str, device: torch.device | str, short_answers: bool = False) -> str:
    """`auto` -> the layout `FASTEST` names for the device's type, or `packed` for short answers (item tokens) on
    every device: one row of the prompt and one token per candidate against N rows of the whole prompt. Any other
    name as it is."""
    if name != "auto":
        return name
    return "packed" if short_answers else FASTEST.get(torch.device(device).type, "paper")


_warned: set[str] = set()


def use_flex(model) -> bool:
    """Set the model's attention to `flex.FLEX` (FlexAttention for the packed rows' BlockMask, SDPA for every
    other call) -> whether it runs; where it cannot, says why once and the packed layout runs as it would."""
    lm = causal_lm(model)
    current = getattr(lm.config, "_attn_implementation", None)
    if current == flex.FLEX:
        return True
    why = None if flex.available() else "this torch has no FlexAttention"
    if why is None and current != "sdpa":  # every other call goes to SDPA: only a model already on it is unchanged
        why = f"the model's attention is '{current}', not sdpa"
    if why is None and getattr(lm.config, "attention_dropout", 0.0) and model.training:
        why = "the model has attention dropout, which FlexAttention does not apply"
    if why is None and hasattr(lm, "set_attn_implementation"):
        flex.register()
        lm.set_attn_implementation(flex.FLEX)
    if why is None and getattr(lm.config, "_attn_implementation", None) != flex.FLEX:
        why = "the model cannot change its attention implementation"
    if why is not None:
        if why not in _warned:
            _warned.add(why)
            warnings.warn(f"layout flex: {why}; scoring with the packed layout's dense mask", stacklevel=3)
        return False
    return True


def running_layout(name: str, model, short_answers: bool = False) -> str:
    """The layout that scores on `model`: `resolve_layout` for its device, and `packed` where `flex` cannot run
    on it (`use_flex`, which sets its attention where it can). Records name this, not the layout asked for."""
    layout = resolve_layout(name, next(model.parameters()).device, short_answers)
    return "packed" if layout == "flex" and not use_flex(model) else layout


def answer_logprobs_flex(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`answer_logprobs_packed` with the model's attention set to FlexAttention (`use_flex`)."""
    use_flex(model)
    return answer_logprobs_packed(model, batch)


def answer_logprobs_flex_short(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`answer_logprobs_short` with the model's attention set to FlexAttention (`use_flex`)."""
    use_flex(model)
    return answer_logprobs_short(model, batch)


def scoring_layout(name: str, short_answers: bool = False, device: torch.device | str | None = None):
    """`packed` (each prompt once, its answers in the same row under a block mask), `flex` (the same rows, the
    mask as a FlexAttention BlockMask), `cache` (each prompt once, its answers on copies of its key/value cache),
    `paper` (the prompt repeated for every answer), or `auto` (`resolve_layout` for `device`).
    `short_answers` (item tokens: every answer one token then EOS): `packed` and `flex` run
    `answer_logprobs_short`."""
    if name == "auto" and device is None:
        raise ValueError("layout 'auto' needs the device it runs on")
    name = resolve_layout(name, device, short_answers)
    if short_answers and name in ("packed", "flex"):
        return answer_logprobs_short if name == "packed" else answer_logprobs_flex_short
    return {
        "packed": answer_logprobs_packed,
        "flex": answer_logprobs_flex,
        "cache": answer_logprobs_cached,
        "paper": answer_logprobs_full,
    }[name]
