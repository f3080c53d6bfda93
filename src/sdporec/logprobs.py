"""Answer log-probabilities.

`sequence_logprobs` is the only place where labels are shifted against logits. `answer_logprobs` scores
the N answers of each prompt in an `AnswerBatch` (layout in `batching.py`) by running each prompt once,
copying its key/value cache N times, and running only the answer tokens on top (a prompt of ~100 tokens
and answers of a few are the usual case, so this avoids most of the compute). Gradients flow through the
cache, so training uses the same path. `answer_logprobs_full` is the paper's layout (prompt repeated for
every answer); it is the fallback and the reference the shared-prompt path is tested against.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .batching import AnswerBatch

IGNORE = -100
_warned = False


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (S, T, V) and labels (S, T), IGNORE where not scored -> (sum of log-probs (S,), tokens (S,)).

    Position t's logits predict label t+1: the shift happens here and nowhere else."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so left padding does not move a prompt."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _cache_kwarg(out) -> tuple[str, object]:
    # transformers renamed `past_key_values` to `cache` during the 5.x series; accept both.
    if getattr(out, "cache", None) is not None:
        return "cache", out.cache
    return "past_key_values", out.past_key_values


def _checkpointing(model) -> bool:
    """Gradient checkpointing drops the key/value cache in training (transformers recomputes each layer
    in the backward pass and will not keep a cache it would write twice)."""
    return model.training and torch.is_grad_enabled() and \
        any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _fallback(model, why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"{type(model).__name__} {why}; scoring with the paper's layout (each answer after "
                      "its own copy of the prompt), which is slower")


def answer_logprobs(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (log-probs (B, N), answer token counts (B, N)) with the prompt computed once per sample."""
    b, n, a = batch.answer_ids.shape
    if _checkpointing(model):
        _fallback(model, "trains with gradient checkpointing, which keeps no key/value cache")
        return answer_logprobs_full(model, batch)
    out = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                position_ids=_positions(batch.prompt_mask), use_cache=True, logits_to_keep=1)
    name, cache = _cache_kwarg(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        _fallback(model, "returned no reusable key/value cache")
        return answer_logprobs_full(model, batch)
    cache.batch_repeat_interleave(n)
    answers = batch.answer_ids.reshape(b * n, a)
    answer_mask = batch.answer_mask.reshape(b * n, a)
    prompt_mask = batch.prompt_mask.repeat_interleave(n, 0)
    start = prompt_mask.sum(-1, keepdim=True)
    cont = model(input_ids=answers, attention_mask=torch.cat([prompt_mask, answer_mask], 1),
                 position_ids=start + torch.arange(a, device=answers.device), use_cache=True, **{name: cache})
    # The prompt's last logits predict the first answer token; answer logits predict the rest.
    logits = torch.cat([out.logits[:, -1:].repeat_interleave(n, 0), cont.logits], 1)  # (B*N, 1+A, V)
    labels = torch.cat([torch.full_like(answers[:, :1], IGNORE),
                        answers.masked_fill(answer_mask == 0, IGNORE)], 1)          # (B*N, 1+A)
    logps, counts = sequence_logprobs(logits, labels)
    return logps.view(b, n), counts.view(b, n)


def layout_fn(name: str):
    """`shared` (each prompt once) or `paper` (the prompt repeated for every answer; for comparisons)."""
    return {"shared": answer_logprobs, "paper": answer_logprobs_full}[name]


def answer_logprobs_full(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The same numbers as `answer_logprobs`, from B*N full sequences prompt + answer (right-padded)."""
    b, n, a = batch.answer_ids.shape
    rows, labels = [], []
    for i in range(b):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
        for j in range(n):
            ans = batch.answer_ids[i, j][batch.answer_mask[i, j].bool()]
            rows.append(torch.cat([prompt, ans]))
            labels.append(torch.cat([torch.full_like(prompt, IGNORE), ans]))
    length = max(len(r) for r in rows)
    ids = torch.zeros((b * n, length), dtype=torch.long, device=batch.prompt_ids.device)
    lab = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for k, (r, l) in enumerate(zip(rows, labels)):
        ids[k, :len(r)], lab[k, :len(r)], mask[k, :len(r)] = r, l, 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    logps, counts = sequence_logprobs(logits, lab)
    return logps.view(b, n), counts.view(b, n)
