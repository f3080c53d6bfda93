"""The packed layout on FlexAttention: its block mask as a `BlockMask`, through transformers' attention interface.

`logprobs.packed_mask` is a dense (B, 1, L, L) mask, and SDPA's flash kernel takes no custom mask, so on a GPU the
packed rows ran on the memory-efficient or the math kernel. Here the same pattern is a `mask_mod` over the packed
rows' `real` and `block` (B, L): FlexAttention computes only the (128 x 128) tiles somebody attends to (never
another answer's tokens or the tail padding) and uses a fused kernel for the rest.

`FLEX` ("sdporec_flex") is registered with transformers' `AttentionInterface` and `AttentionMaskInterface`. A model
set to it runs FlexAttention when it is given a `BlockMask` (the packed layouts) and SDPA, with SDPA's own masks,
for everything else (generation, the paper layout, the history), so one model serves every path unchanged.

FlexAttention has no backward on a CPU (torch 2.13): there, when gradients are needed, the same `mask_mod` is made
dense and run on SDPA, so training on a CPU gives the same numbers through the same inputs (tests), slowly.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

FLEX = "sdporec_flex"

# FlexAttention's tile: row lengths are padded up to a multiple, so the compiled kernel sees few shapes.
BUCKET = 128


def available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def register() -> None:
    """Make `FLEX` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FLEX, flex_or_sdpa)
    AttentionMaskInterface.register(FLEX, sdpa_mask)  # 2D masks become what SDPA takes


def packed_pattern(real: torch.Tensor, block: torch.Tensor, b, h, q, kv):
    """Who may attend to whom in packed rows (`logprobs.PackedRows.real` and `.block`, both (B, L)), the rule of
    `logprobs.packed_mask`: a prompt token sees the real prompt tokens up to itself, a token of answer j the whole
    real prompt and answer j up to itself; every token sees itself. With `real` and `block` bound
    (`functools.partial`, whose tensors torch.compile lifts as inputs), FlexAttention's mask_mod."""
    same = (block[b, kv] == block[b, q]) | (block[b, kv] == -1)
    return ((kv <= q) & real[b, kv] & same) | (q == kv)


def bucketed(length: int) -> int:
    return -(-length // BUCKET) * BUCKET


def block_mask(real: torch.Tensor, block: torch.Tensor):
    """-> the `BlockMask` of `packed_pattern` over `real` and `block`; (B, L) inputs, L a multiple of `BUCKET`."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, length = real.shape
    return create_block_mask(
        functools.partial(packed_pattern, real, block), b, None, length, length, device=real.device
    )


def dense_mask(mask) -> torch.Tensor:
    """A `BlockMask`'s pattern as bool (B, 1, Q, KV), True = may attend."""
    from torch.nn.attention.flex_attention import create_mask

    b, _, q, kv = mask.shape
    return create_mask(mask.mask_mod, b, 1, q, kv, device=mask.kv_num_blocks.device)


def flex_inputs(rows) -> dict:
    """The model's inputs for packed rows (`logprobs.PackedRows`) with their pattern as a `BlockMask`, right-padded
    to a multiple of `BUCKET` (tail padding: token 0, not real, block -2, as `pack_rows` pads)."""
    pad = bucketed(rows.ids.shape[1]) - rows.ids.shape[1]

    def padded(t: torch.Tensor, value) -> torch.Tensor:
        return torch.cat([t, t.new_full((t.shape[0], pad), value)], 1)

    real, block = padded(rows.real, False), padded(rows.block, -2)
    return dict(
        input_ids=padded(rows.ids, 0), attention_mask=block_mask(real, block), position_ids=padded(rows.positions, 0)
    )


@functools.cache
def _kernel(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    # Compiled where it has a fused kernel (uncompiled, FlexAttention materialises every score).
    return torch.compile(flex_attention) if device_type == "cuda" else flex_attention


def flex_or_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function contract ((B, H, T, D) query, key and value -> ((B, T, H, D) output,
    no weights)): FlexAttention for a `BlockMask`, SDPA, given every argument as transformers passes it, for
    anything else."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout or kwargs.get("s_aux") is not None:
        raise ValueError(
            "the flex layout applies neither attention dropout nor attention sinks: use --layout packed with this model"
        )
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if grad and query.device.type in ("cpu", "mps"):  # no FlexAttention backward there
        return sdpa_attention_forward(module, query, key, value, dense_mask(attention_mask), scaling=scaling, **kwargs)
    softcap = kwargs.get("softcap")
    score_mod = None if softcap is None else SoftCap(softcap)
    if query.shape[1] & (query.shape[1] - 1):  # FlexAttention's GQA wants power-of-two head counts
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], 1) for t in (key, value))
    with warnings.catch_warnings():
        if query.device.type != "cuda":  # uncompiled by design there; on CUDA the warning must show
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = _kernel(query.device.type)(
            query,
            key,
            value,
            score_mod=score_mod,
            block_mask=attention_mask,
            scale=scaling,
            enable_gqa=key.shape[1] != query.shape[1],
        )
    return out.transpose(1, 2).contiguous(), None


@dataclass
class SoftCap:
    """Gemma-style logit soft-capping of attention scores, as a FlexAttention score_mod."""

    cap: float

    def __call__(self, score, b, h, q, kv):
        return torch.tanh(score / self.cap) * self.cap
