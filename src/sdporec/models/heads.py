"""Logits formed only where a label is scored: `label_logprobs` takes log p(label) at chosen (row, column)
positions from a head, `HiddenHead` (the decoder's hidden states and the model's own output embedding, applied by
hand) or `KeptLogits` (the model's logits from one column on, where the head cannot be applied by hand)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def unwrapped(model):
    """The model inside DDP and other wrappers, which keep the transformers model as `.module`."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model


# Logits held at once by `label_logprobs`: positions per chunk x vocabulary size (64 MB in float32).
CHUNK_ELEMENTS = 1 << 24


def label_logprobs(head, sample: torch.Tensor, column: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[i]) at position (sample[i], column[i]) for M positions -> (M,).

    `head.logits(sample, column)` gives those positions' logits (m, V); they are formed a chunk of
    positions at a time, so at most CHUNK_ELEMENTS logits exist at once (plus what autograd keeps when
    training), and only the log-sum-exp runs in float32."""
    step = max(1, CHUNK_ELEMENTS // head.vocab)
    out = []
    for i in range(0, labels.numel(), step):
        logits = head.logits(sample[i : i + step], column[i : i + step])
        picked = logits.gather(-1, labels[i : i + step, None]).squeeze(-1)
        out.append(picked.float() - torch.logsumexp(logits.float(), -1))
    return torch.cat(out) if out else torch.zeros(0, device=labels.device)


def causal_lm(model):
    """The transformers model inside DDP-style (`.module`) and peft (`get_base_model`) wrappers."""
    model = unwrapped(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _sharded(model) -> bool:
    """FSDP or DeepSpeed ZeRO-3 hold parameters sharded outside their forward: the head cannot be applied
    by hand there."""
    return any(
        type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP", "DeepSpeed"))
        or hasattr(getattr(m, "weight", None), "ds_id")
        for m in (model, *model.modules())
    )


# Configs whose causal-LM head does more than the output embedding (and soft-capping, which is applied).
_HEAD_EXTRAS = ("logit_scale", "logits_scaling", "output_multiplier_scale")


@dataclass
class HiddenHead:
    """The decoder's final hidden states (the model runs with `logits_to_keep=1`), turned into logits by
    the model's own output embedding only where asked."""

    hidden: torch.Tensor
    embedding: torch.nn.Module
    softcap: float | None
    vocab: int

    @classmethod
    def run(cls, model, inputs: dict) -> HiddenHead | None:
        lm = causal_lm(model)
        decoder = getattr(lm, "base_model", lm)
        embedding = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
        if (
            decoder is lm
            or embedding is None
            or _sharded(model)
            or any(getattr(lm.config, k, None) not in (None, 1, 1.0) for k in _HEAD_EXTRAS)
        ):
            return None
        seen: dict[str, torch.Tensor] = {}
        hook = decoder.register_forward_hook(
            lambda _m, _i, out: seen.update(hidden=out[0])
        )  # returns None: output kept
        try:
            model(**inputs, logits_to_keep=1)
        finally:
            hook.remove()
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        return cls(seen["hidden"], embedding, softcap, embedding.weight.shape[0])

    def logits(self, sample: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        logits = self.embedding(self.hidden[sample, column])
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap


@dataclass
class KeptLogits:
    """The model's own logits from column `first` on (for models whose head is not applied by hand). A
    model that ignores `logits_to_keep` returns every column; `first` is read from what came back."""

    kept: torch.Tensor
    first: int
    vocab: int

    @classmethod
    def run(cls, model, inputs: dict, first: int) -> KeptLogits:
        length = inputs["input_ids"].shape[1]
        logits = model(**inputs, logits_to_keep=length - first).logits
        return cls(logits, length - logits.shape[1], logits.shape[-1])

    def logits(self, sample: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        return self.kept[sample, column - self.first]
