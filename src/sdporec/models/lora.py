"""LoRA: which layers get adapters, adding one, loading a saved one (its weights checked), QLoRA's
preparation of a 4-bit base, and gradient checkpointing."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from sdporec.errors import ConfigError, require
from sdporec.models.checkpoints import loading, report_weights


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """peft asks every model for `is_gradient_checkpointing`, which transformers 5 deprecates with a
    FutureWarning on each call; that warning is peft's to fix and says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def attach_adapter(base, path: str, name: str = "default", trainable: bool = False):
    """A saved LoRA adapter on `base` (a PeftModel, or `base` itself when it already is one), its weights
    checked against what the adapter's config expects."""
    from peft import PeftModel, get_peft_model_state_dict

    with peft_quietly(), warnings.catch_warnings(), loading(path):
        warnings.filterwarnings("ignore", message="Found missing adapter keys")  # reported below
        if isinstance(base, PeftModel):
            base.load_adapter(path, adapter_name=name, is_trainable=trainable)
            model = base
        else:
            model = PeftModel.from_pretrained(base, path, adapter_name=name, is_trainable=trainable)
    weights = Path(path) / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            saved = set(f.keys())
        expected = set(get_peft_model_state_dict(model, adapter_name=name))
        report_weights(path, expected - saved, saved - expected)
    return model


def merge_adapter(model):
    """`model` with its LoRA adapter (and the item rows peft trained beside it) folded into the weights: a
    plain transformers model, as `export --merge` writes and inference runs fastest."""
    with peft_quietly():
        return model.merge_and_unload()


def for_inference(model, dtype: str, load_in_4bit: bool):
    """An adapter merged for ranking and generation where that loses nothing: in float32 the merged model
    scores as the adapter does (to ~1e-6) and ranks 1.2-1.5x faster on a CPU (docs/speed.md). Left unmerged
    in bfloat16/float16, where rounding W + BA to 8 mantissa bits can erase a small update, and in 4 bits."""
    if not hasattr(model, "merge_and_unload") or load_in_4bit or dtype != "float32":
        return model
    return merge_adapter(model).eval()


def lora_targets(model) -> list[str]:
    """Names of the linear layers inside the transformer blocks (attention and MLP projections), found
    by walking the model: q/k/v/o and gate/up/down for Llama, Qwen, Mistral and Gemma, c_attn/c_proj/c_fc
    for GPT-2 (whose Conv1D layers are linear layers with transposed weights). Embeddings and the LM head
    are left alone."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    blocks = (".layers.", ".h.")  # where the families keep their transformer blocks
    names = {
        name.rsplit(".", 1)[-1]
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head and any(b in f".{name}." for b in blocks)
    }
    if not names:
        raise ConfigError(
            f"setting 'lora_targets': {type(model).__name__} has no linear layers in its blocks "
            "where sdporec looks (.layers. or .h.); name them with --lora-targets"
        )
    return sorted(names)


def trainable_base(model):
    """A 4-bit base made ready for adapter training (QLoRA: norms in fp32, input gradients); others as they are."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def trainable_tokens(model, tokens: Sequence[int]) -> list[int] | dict[str, list[int]] | None:
    """peft's `trainable_token_indices` for `tokens` (the item tokens' rows): a list where the head is tied to
    the input embedding (peft then ties the head to the same trained rows), else one list per module."""
    if not tokens:
        return None
    from sdporec.models.item_rows import embedding_names

    names = embedding_names(model)
    if "output" not in names:
        return list(tokens)
    return {names["input"]: list(tokens), names["output"]: list(tokens)}


def add_lora(model, r: int, alpha: int, dropout: float, targets: Sequence[str] = (), tokens: Sequence[int] = ()):
    """A new LoRA adapter on `model`'s block projections; `tokens`: embedding rows trained with it (item tokens)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    model = trainable_base(model)
    if targets:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
        )
        missing = sorted(set(targets) - set(linear))
        require(
            not missing,
            "lora_targets",
            f"{', '.join(missing)}: no such linear layer in {type(model).__name__} (it has {', '.join(linear)})",
        )

    # GPT-2's Conv1D layers store their weights transposed (fan_in_fan_out).
    transposed = any(isinstance(m, Conv1D) for m in model.modules())
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets or lora_targets(model)),
        fan_in_fan_out=transposed,
        task_type="CAUSAL_LM",
        trainable_token_indices=trainable_tokens(model, tokens),
    )
    with peft_quietly():
        return get_peft_model(model, cfg)


def enable_gradient_checkpointing(model) -> None:
    # Non-reentrant checkpointing needs no input gradients, so it works with frozen embeddings (LoRA).
    # transformers 5 renamed it activation checkpointing and keeps the old name as a deprecated alias.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
