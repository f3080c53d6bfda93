"""Answer log-probabilities.

Labels meet logits in two forms: `sequence_logprobs` shifts labels against whole-row logits (the cache path,
the history run as its own sequence), and `label_logprobs` (models/heads.py) scores each label at the column
before it, which the packed and paper layouts and SFT's prompt labels compute from their row layouts. The N answers
of each prompt in an `AnswerBatch` (format in `data/batching.py`) are scored with the prompt computed once (a prompt of
~100 tokens and answers of a few are the usual case, so this avoids most of the compute), in one of two
ways that give the same numbers (to 1e-5, tested):

- `answer_logprobs_packed` (the default): one row per sample, the prompt then the real
  tokens of all N answers (`pack_rows`), under a 4D block mask. Needs an attention that applies custom
  4D masks (eager, SDPA).
- `answer_logprobs_cached`: the prompt runs alone, its key/value cache is copied N times and only the
  answer tokens run on top. Needs a reusable cache, which transformers keeps neither under gradient
  checkpointing nor for every model.

Each falls back to the other where it cannot run; where neither can, to `answer_logprobs_full`, the paper's
layout (the prompt repeated for every answer), with a warning; it is also the layout `--layout paper` names
(`scoring.scoring_layout` picks among them).
All three form logits only where an answer token is predicted; the tests check them against whole-row logits
through `sequence_logprobs`. Gradients flow through all three, so training and scoring use the same code.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdporec.data.batching import IGNORE, AnswerBatch
from sdporec.models.flex import FLEX, flex_inputs
from sdporec.models.heads import HiddenHead, KeptLogits, label_logprobs, unwrapped

_warned = False


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (S, T, V) and labels (S, T), IGNORE where not scored -> (sum of log-probs (S,), tokens (S,)).

    Position t's logits predict label t+1: the shift happens here and nowhere else."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def answer_and_prompt_logprobs(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """SFT with labels inside the prompt (one answer per prompt): one row per sample, [prompt (left-padded) |
    answer (right-padded)], one forward pass -> (answer log-probs (B,), prompt-label log-probs (B,)).
    Logits are formed only at the columns that predict a label, as in the scoring layouts (a history has ~10
    labels in a prompt of ~100+ tokens; whole-row logits would be ten times more rows of the vocabulary)."""
    assert batch.n_answers == 1 and batch.prompt_labels is not None, "one answer per prompt, with prompt labels"
    answer, answer_mask = batch.answer_ids[:, 0], batch.answer_mask[:, 0]
    ids = torch.cat([batch.prompt_ids, answer], 1)
    mask = torch.cat([batch.prompt_mask, answer_mask], 1)
    labels = torch.cat([batch.prompt_labels, answer.masked_fill(answer_mask == 0, IGNORE)], 1)[:, 1:]
    sample, column = (labels != IGNORE).nonzero(as_tuple=True)  # column t predicts the label at t + 1
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": real_positions(mask)}
    first = int(column.min()) if column.numel() else ids.shape[1] - 1
    head = HiddenHead.run(model, inputs) or KeptLogits.run(model, inputs, first)
    tokens = label_logprobs(head, sample, column, labels[sample, column])
    of_answer = column >= batch.prompt_ids.shape[1] - 1  # the answer's labels stand after the prompt
    zeros = torch.zeros(ids.shape[0], device=ids.device, dtype=tokens.dtype)
    return (
        zeros.index_add(0, sample[of_answer], tokens[of_answer]),
        zeros.index_add(0, sample[~of_answer], tokens[~of_answer]),
    )


def history_logprobs(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's history run as its own sequence (`AnswerBatch.with_histories`) -> (summed log-probs of its
    labelled tokens (B,), their counts (B,)): the history's next-item loss."""
    logits = model(input_ids=batch.history_ids, attention_mask=batch.history_mask).logits
    return sequence_logprobs(logits, batch.history_labels)


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so left padding does not move a prompt."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def cache_kwarg(out) -> tuple[str, object]:
    # transformers renamed `past_key_values` to `cache` during the 5.x series; accept both.
    if getattr(out, "cache", None) is not None:
        return "cache", out.cache
    return "past_key_values", out.past_key_values


def _checkpointing(model) -> bool:
    """Gradient checkpointing drops the key/value cache in training (transformers recomputes each layer
    in the backward pass and will not keep a cache it would write twice)."""
    return (
        model.training
        and torch.is_grad_enabled()
        and any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    )


def _fallback(model, why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{type(model).__name__} {why}; scoring with the paper's layout (each answer after "
            "its own copy of the prompt), which is slower",
            stacklevel=3,
        )


def answer_logprobs_cached(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (log-probs (B, N), answer token counts (B, N)): answers run on copies of the prompt's cache."""
    b, n, a = batch.answer_ids.shape
    if _checkpointing(model):
        return answer_logprobs_packed(model, batch)  # no cache under checkpointing (packed says what runs)
    out = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=real_positions(batch.prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    name, cache = cache_kwarg(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        if maskable(model):
            return answer_logprobs_packed(model, batch)
        _fallback(model, "returned no reusable key/value cache")
        return answer_logprobs_full(model, batch)
    cache.batch_repeat_interleave(n)
    answers = batch.answer_ids.reshape(b * n, a)
    answer_mask = batch.answer_mask.reshape(b * n, a)
    prompt_mask = batch.prompt_mask.repeat_interleave(n, 0)
    start = prompt_mask.sum(-1, keepdim=True)
    cont = model(
        input_ids=answers,
        attention_mask=torch.cat([prompt_mask, answer_mask], 1),
        position_ids=start + torch.arange(a, device=answers.device),
        use_cache=True,
        **{name: cache},
    )
    # The prompt's last logits predict the first answer token; answer logits predict the rest.
    logits = torch.cat([out.logits[:, -1:].repeat_interleave(n, 0), cont.logits], 1)  # (B*N, 1+A, V)
    logps, counts = sequence_logprobs(logits, _answer_labels(batch))
    return logps.view(b, n), counts.view(b, n)


def _answer_labels(batch: AnswerBatch) -> torch.Tensor:
    """(B*N, 1+A) labels for logits laid out [prompt's last position | answer positions]: nothing to score
    at the first column, then each answer's tokens, IGNORE on its padding."""
    b, n, a = batch.answer_ids.shape
    answers = batch.answer_ids.reshape(b * n, a)
    return torch.cat(
        [
            torch.full_like(answers[:, :1], IGNORE),
            answers.masked_fill(batch.answer_mask.reshape(b * n, a) == 0, IGNORE),
        ],
        1,
    )


# Attention implementations that apply the packed rows' mask: a float 4D mask as given (flash attention ignores
# it, transformers' flex attention wants its own BlockMask), or ours, which takes the pattern as a BlockMask.
_MASKABLE = ("eager", "sdpa", FLEX)


def _attention(model) -> str | None:
    return getattr(getattr(unwrapped(model), "config", None), "_attn_implementation", None)


def maskable(model) -> bool:
    return _attention(model) in _MASKABLE


@dataclass
class PackedRows:
    """A batch as one row per sample: [prompt (P, left-padded as given) | answer 0 | ... | answer N-1 |
    tail padding]. Each answer contributes its real tokens only, so titles of different lengths cost no
    per-answer padding; rows are right-padded to the longest. Shapes, L = P + the longest row's answer
    tokens:

        ids (B, L)        token ids (0 on tail padding, never attended to)
        real (B, L)       True on real tokens
        block (B, L)      -1 prompt, j answer j, -2 tail padding
        positions (B, L)  the prompt's own positions; answer tokens continue from the prompt's end
        cols (B, N, A)    each answer token's column (padding tokens: a clamped column, never scored)
    """

    ids: torch.Tensor
    real: torch.Tensor
    block: torch.Tensor
    positions: torch.Tensor
    cols: torch.Tensor


def pack_rows(batch: AnswerBatch) -> PackedRows:
    b, n, a = batch.answer_ids.shape
    p = batch.prompt_ids.shape[1]
    dev = batch.prompt_ids.device
    amask = right_padded_answers(batch)  # (B, N, A)
    lens = amask.sum(-1)  # (B, N)
    t = torch.arange(a, device=dev)
    length = p + int(lens.sum(-1).max())
    cols = (p + (lens.cumsum(-1) - lens)[..., None] + t).clamp(max=length - 1)  # (B, N, A)
    rows = torch.arange(b, device=dev)[:, None, None].expand(b, n, a)[amask]
    at = cols[amask]  # real answer tokens
    ids = torch.zeros((b, length), dtype=batch.prompt_ids.dtype, device=dev)
    ids[:, :p] = batch.prompt_ids
    ids[rows, at] = batch.answer_ids[amask]
    real = torch.zeros((b, length), dtype=torch.bool, device=dev)
    real[:, :p] = batch.prompt_mask.bool()
    real[rows, at] = True
    block = torch.full((b, length), -2, dtype=torch.long, device=dev)
    block[:, :p] = -1
    block[rows, at] = torch.arange(n, device=dev)[None, :, None].expand(b, n, a)[amask]
    positions = torch.zeros((b, length), dtype=torch.long, device=dev)
    positions[:, :p] = real_positions(batch.prompt_mask)
    start = batch.prompt_mask.sum(-1)  # (B,)
    positions[rows, at] = (start[:, None, None] + t).expand(b, n, a)[amask]
    return PackedRows(ids, real, block, positions, cols)


def packed_mask(real: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """Who may attend to whom in packed rows (`PackedRows.real` and `.block`, both (B, L)).

    -> bool (B, 1, L, L), True = may attend. A prompt token sees the real prompt tokens up to itself; a
    token of answer j sees the whole real prompt and answer j's tokens up to itself, never another
    answer. Every token also sees itself, so padding rows are never fully masked (softmax over nothing
    gives NaN)."""
    length = real.shape[1]
    idx = torch.arange(length, device=real.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L) q >= k
    same = (block[:, :, None] == block[:, None, :]) | (block[:, None, :] == -1)  # (B, L, L)
    allowed = causal[None] & same & real[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=real.device)[None]
    return allowed[:, None]


def packed_inputs(model, rows: PackedRows) -> dict:
    """The model's inputs for packed rows: ids, position ids and `packed_mask` in additive form (eager
    attention adds the mask to the scores; SDPA takes either form), in the model's dtype; under `FLEX`
    attention the same pattern as a BlockMask (`flex.flex_inputs`)."""
    if _attention(model) == FLEX:
        return flex_inputs(rows)
    dtype = next(model.parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    allowed = packed_mask(rows.real, rows.block)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return dict(input_ids=rows.ids, attention_mask=mask, position_ids=rows.positions)


def answer_logprobs_packed(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (log-probs (B, N), answer token counts (B, N)) from one packed row per sample (`pack_rows`)
    under `packed_mask`, each answer's position ids continuing from its prompt's end (as if it followed
    the prompt alone). Logits are formed only at the positions that predict a real answer token, a chunk
    at a time (`label_logprobs`)."""
    if not maskable(model):
        if not _checkpointing(model):
            return answer_logprobs_cached(model, batch)  # flash attention and the like: the cache path
        _fallback(
            model,
            f"trains with gradient checkpointing (no key/value cache) and uses attention "
            f"'{_attention(model)}', which does not apply a custom 4D mask",
        )
        return answer_logprobs_full(model, batch)
    b, n, a = batch.answer_ids.shape
    p = batch.prompt_ids.shape[1]
    rows = pack_rows(batch)
    inputs = packed_inputs(model, rows)
    real = batch.answer_mask.bool()  # (B, N, A)
    # Each real answer token is predicted at the column before it: the prompt's last column for its first
    # token, its previous token's column for the others.
    before = torch.cat([torch.full_like(rows.cols[..., :1], p - 1), rows.cols[..., :-1]], -1)
    sample = torch.arange(b, device=real.device)[:, None, None].expand(b, n, a)[real]  # (M,)
    column = before[real]  # (M,)
    head = HiddenHead.run(model, inputs) or KeptLogits.run(model, inputs, p - 1)
    return answer_sums(head, sample, column, batch)


def right_padded_answers(batch: AnswerBatch) -> torch.Tensor:
    """`batch.answer_mask` as bool (B, N, A), asserted right-padded (the layout of data/batching.py)."""
    amask = batch.answer_mask.bool()
    t = torch.arange(amask.shape[-1], device=amask.device)
    assert torch.equal(amask, t < amask.sum(-1, keepdim=True)), "answers must be right-padded (see data/batching.py)"
    return amask


def answer_sums(head, row: torch.Tensor, column: torch.Tensor, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each answer's summed log-prob over its real tokens, taken in `batch.answer_ids[answer_mask]` order, token m
    scored at (row[m], column[m]) of `head` -> (log-probs (B, N), answer token counts (B, N))."""
    b, n, a = batch.answer_ids.shape
    real = batch.answer_mask.bool()
    tokens = label_logprobs(head, row, column, batch.answer_ids[real])  # (M,)
    answer = torch.arange(b * n, device=real.device).view(b, n, 1).expand(b, n, a)[real]
    logps = torch.zeros(b * n, dtype=tokens.dtype, device=tokens.device).index_add(0, answer, tokens)
    return logps.view(b, n), real.sum(-1)


def answer_logprobs_full(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The same numbers as the shared-prompt layouts, from B*N rows [prompt | one answer | right padding]: the
    paper's layout, each prompt repeated for every answer. As in the packed layout, logits are formed only at
    the positions that predict a real answer token, a chunk at a time (`label_logprobs`): whole-row logits
    of 20 candidates x a batch of prompts x a 50k-150k vocabulary would not fit a GPU."""
    b, n, a = batch.answer_ids.shape
    dev = batch.prompt_ids.device
    amask = right_padded_answers(batch)  # (B, N, A)
    t = torch.arange(a, device=dev)
    p, start = batch.prompt_ids.shape[1], batch.prompt_mask.sum(-1)  # start (B,): prompt length
    ends = start[:, None] + amask.sum(-1)  # (B, N): row lengths
    length = int(ends.max())
    ids = torch.zeros((b, n, length), dtype=batch.prompt_ids.dtype, device=dev)
    for i, k in enumerate(start.tolist()):
        ids[i, :, :k] = batch.prompt_ids[i, p - k :]
        width = min(a, length - k)
        ids[i, :, k : k + width] = batch.answer_ids[i, :, :width]
    # No attention mask: each row is unpadded up to its end and right-padded after it, so causal attention alone
    # keeps every scored position off the padding, and SDPA may take its flash kernel (a padding mask rules it out).
    inputs = dict(input_ids=ids.view(b * n, length))
    rows = torch.arange(b * n, device=dev).view(b, n, 1).expand(b, n, a)[amask]  # (M,)
    column = (start[:, None, None] - 1 + t).expand(b, n, a)[amask]  # predicts token t
    head = HiddenHead.run(model, inputs) or KeptLogits.run(model, inputs, int(start.min()) - 1)
    return answer_sums(head, rows, column, batch)
