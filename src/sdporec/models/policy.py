"""The policy that preference training trains and its frozen reference."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch

from sdporec.models.checkpoints import is_adapter
from sdporec.models.loading import adapter_base, load_codec_of, load_weights
from sdporec.models.lora import add_lora, attach_adapter, trainable_base


class Policy:
    """The trained model and its frozen reference.

    Full fine-tuning either keeps a frozen copy (online reference) or loads the SFT checkpoint only for
    the duration of a `reference()` block (the precomputed reference pass). A new LoRA over a full SFT model
    uses the model with the adapter turned off. An SFT LoRA adapter is loaded twice: trainable as "default"
    (so training starts from it) and frozen as "reference"; only "default" is saved.
    """

    def __init__(
        self,
        model,
        reference_model=None,
        reference_adapter: str | None = None,
        reference_path: str | None = None,
        dtype: str = "float32",
    ):
        self.model, self._ref_model, self._ref_adapter = model, reference_model, reference_adapter
        self._ref_path, self.torch_dtype = reference_path, dtype

    def to(self, device) -> Policy:
        self.model.to(device)
        if self._ref_model is not None:
            self._ref_model.to(device)
        return self

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference model, in eval mode (no dropout) and without gradients."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield from self._reference()
        finally:
            self.model.train(was_training)

    def _reference(self) -> Iterator[torch.nn.Module]:
        if self._ref_model is not None:
            yield self._ref_model
        elif self._ref_path is not None:
            ref = load_weights(self._ref_path, self.torch_dtype).to(next(self.model.parameters()).device).eval()
            try:
                yield ref
            finally:
                del ref
        elif self._ref_adapter is not None:
            self.model.set_adapter(self._ref_adapter)
            try:
                yield self.model
            finally:
                self.model.set_adapter("default")
                _freeze_adapter(self.model, self._ref_adapter)
        else:
            with self.model.disable_adapter():
                yield self.model


def _freeze_adapter(model, name: str) -> None:
    for n, p in model.named_parameters():
        if f".{name}." in n or n.endswith(f".{name}"):  # LoRA weights, and trainable token rows
            p.requires_grad_(False)


def policy_from_sft(
    path: str,
    lora: bool,
    r: int,
    alpha: int,
    dropout: float,
    dtype: str,
    resident_reference: bool = True,
    load_in_4bit: bool = False,
    targets: Sequence[str] = (),
    chat_template: str = "auto",
) -> tuple[Policy, object]:
    """The policy to train and its reference. `resident_reference=False` (full fine-tuning only) keeps
    no second model in memory: the reference is loaded from `path` when asked for."""
    codec = load_codec_of(path, chat_template)
    if is_adapter(path):
        base = trainable_base(load_weights(adapter_base(path), dtype, load_in_4bit))
        model = attach_adapter(base, path, "default", trainable=True)
        attach_adapter(model, path, "reference", trainable=False)
        model.set_adapter("default")
        _freeze_adapter(model, "reference")
        return Policy(model, reference_adapter="reference"), codec
    model = load_weights(path, dtype, load_in_4bit)
    if lora:  # item tokens' rows train with a new adapter, as in SFT
        return Policy(add_lora(model, r, alpha, dropout, targets, getattr(codec, "token_ids", ()))), codec
    if not resident_reference:
        return Policy(model, reference_path=path, dtype=dtype), codec
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return Policy(model, reference_model=ref), codec
