"""The built-in backbone: a small Llama over an item-token vocabulary built from the data, created
from a config (no download), and the hidden-state dropout SFT can train it with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdporec.data.codec import build_builtin_codec

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

    codec = build_builtin_codec(titles)
    cfg = LlamaConfig(
        vocab_size=len(codec.vocab),
        hidden_size=size.hidden,
        intermediate_size=size.hidden * 3,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions,
        pad_token_id=codec.pad_id,
        bos_token_id=codec.bos_id,
        eos_token_id=codec.eos_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg), codec


class HiddenDropout:
    """A forward hook that drops a module's output while the model trains (`F.dropout`, identity in eval)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, module, args, output):
        return F.dropout(output, self.p, module.training)


def add_hidden_dropout(model, p: float) -> list:
    """Dropout at the places SASRec and GPT-2 put it, which a Llama lacks: on the token embeddings and on each
    attention and MLP block's output before it joins the residual stream. Hooks, not weights: checkpoints stay
    plain Llamas and later stages (DPO, S-DPO, evaluation) run without it. Returns the hook handles."""
    hook = HiddenDropout(p)
    modules = [model.model.embed_tokens]
    for layer in model.model.layers:
        modules += [layer.self_attn.o_proj, layer.mlp.down_proj]
    return [m.register_forward_hook(hook) for m in modules]
