"""The built-in backbone: a small Llama over an item-token vocabulary built from the data, created
from a config (no download)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sdporec.data.codec import build_item_codec

BUILTIN = "builtin"


@dataclass
class BuiltinSize:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 256


def build_builtin(titles: Sequence[str], size: BuiltinSize, seed: int):
    """A small Llama created from a config (no download) over a vocabulary built from the data."""
    from transformers import LlamaConfig, LlamaForCausalLM

    codec = build_item_codec(titles)
    cfg = LlamaConfig(
        vocab_size=len(codec.vocab), hidden_size=size.hidden, intermediate_size=size.hidden * 3,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions, pad_token_id=codec.pad_id, bos_token_id=codec.bos_id,
        eos_token_id=codec.eos_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg), codec
