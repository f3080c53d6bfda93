"""Backbones: the built-in item-token Llama, pretrained models through the Auto classes, LoRA, and
checkpoints in Hugging Face format.

A checkpoint directory holds either full weights or a LoRA adapter (`adapter_config.json`), the
tokenizer with `sdporec_codec.json`, and `sdporec_checkpoint.json` (what it was trained from). A LoRA
adapter over the built-in backbone keeps that backbone's weights in `base/`, since they exist nowhere else.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .codec import ItemCodec, TextCodec, build_item_codec, load_codec
from .config import ConfigError, require, warn
from .samples import read_json_object
from .sources import is_gguf, load_gguf_model, require_no_4bit_gguf

BUILTIN = "builtin"
META_FILE = "sdporec_checkpoint.json"


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


def recorded_domain(path: str, flag: str | None) -> str:
    """The prompt domain for a command that loads `path`: the one its training recorded (in
    `sdporec_checkpoint.json`) unless `flag` names one; a flag that disagrees is honoured with a warning.
    Without either: music."""
    recorded = (checkpoint_meta(path).get("config") or {}).get("domain")
    if flag is None:
        return recorded or "music"
    if recorded and recorded != flag:
        warn(f"{path} was trained on {recorded} prompts; using --domain {flag} as asked")
    return flag


def checkpoint_meta(path: str | Path) -> dict:
    """What `sdporec_checkpoint.json` in `path` records ({} where there is none)."""
    meta = Path(path) / META_FILE
    return read_json_object(meta, "the checkpoint's record is damaged") if meta.is_file() else {}


def is_own_checkpoint(path: str | Path) -> bool:
    """Written by sdporec (training, export, a saved base): every weight it holds must load."""
    return (Path(path) / META_FILE).is_file()


def report_weights(path: str | Path, missing, unexpected) -> None:
    """Weights a model expected but the checkpoint lacks (left as initialised: random) and weights the
    checkpoint holds that the model does not use: an error for sdporec's own checkpoints, a warning else."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if not (missing or unexpected):
        return
    parts = [f"{len(missing)} weight(s) missing, left randomly initialised ({', '.join(missing[:6])}"
             f"{', ...' if len(missing) > 6 else ''})" if missing else "",
             f"{len(unexpected)} weight(s) in the files that the model does not use ({', '.join(unexpected[:6])}"
             f"{', ...' if len(unexpected) > 6 else ''})" if unexpected else ""]
    detail = "; ".join(p for p in parts if p)
    if is_own_checkpoint(path):
        raise ConfigError(f"setting 'model': {path} is an sdporec checkpoint that does not load whole: {detail}; "
                          "it is damaged, or its files were changed after training")
    warn(f"{path}: {detail}")


@contextlib.contextmanager
def loading(path: str, setting: str = "model") -> Iterator[None]:
    """Errors that transformers, peft or safetensors raise while reading a model or tokenizer become one
    `ConfigError` naming the setting and the path."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"setting '{setting}': cannot load {path}: {text[:300]}{'...' if len(text) > 300 else ''}") from e


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _load_full(path: str, dtype: str, load_in_4bit: bool = False):
    if is_gguf(path):
        require_no_4bit_gguf(path, load_in_4bit)
        with loading(path):
            return load_gguf_model(path, _dtype(dtype))
    if not load_in_4bit:
        return _pretrained(path, dtype=_dtype(dtype))
    from .config import require_cuda_for_4bit

    require_cuda_for_4bit(True)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("setting 'load_in_4bit': bitsandbytes is not installed (pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return _pretrained(path, quantization_config=quant, dtype=torch.bfloat16,
                       device_map={"": torch.cuda.current_device()})


def _pretrained(path: str, **kwargs):
    """`from_pretrained` with transformers' loading report checked (its own notice is silenced by the CLI)."""
    from transformers import AutoModelForCausalLM

    with loading(path):
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    report_weights(path, info.get("missing_keys", ()), info.get("unexpected_keys", ()))
    return model


def attach_adapter(base, path: str, name: str = "default", trainable: bool = False):
    """A saved LoRA adapter on `base` (a PeftModel, or `base` itself when it already is one), its weights
    checked against what the adapter's config expects."""
    from peft import PeftModel, get_peft_model_state_dict

    with _peft_quietly(), warnings.catch_warnings(), loading(path):
        warnings.filterwarnings("ignore", message="Found missing adapter keys")   # reported below
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


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


@contextlib.contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft asks every model for `is_gradient_checkpointing`, which transformers 5 deprecates with a
    FutureWarning on each call; that warning is peft's to fix and says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _adapter_base(path: str | Path) -> str:
    local = Path(path) / "base"
    if local.is_dir():
        return str(local)
    with loading(str(path)):
        return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_codec_of(path: str, chat_template: str = "auto") -> ItemCodec | TextCodec:
    """The codec of a checkpoint or model (`codec.load_codec`), load errors as one `ConfigError`."""
    with loading(path):
        return load_codec(path, chat_template)


def load_model(path: str, dtype: str = "float32", load_in_4bit: bool = False, chat_template: str = "auto",
               codec: ItemCodec | TextCodec | None = None):
    """A trained checkpoint (full or adapter) or any causal LM by directory, hub name or GGUF file, for
    inference, with its codec (`codec`: one already loaded from `path`)."""
    codec = codec or load_codec_of(path, chat_template)
    if is_adapter(path):
        model = attach_adapter(_load_full(_adapter_base(path), dtype, load_in_4bit), path)
    else:
        model = _load_full(path, dtype, load_in_4bit)
    model.eval()
    return model, codec


def lora_targets(model) -> list[str]:
    """Names of the linear layers inside the transformer blocks (attention and MLP projections), found
    by walking the model: q/k/v/o and gate/up/down for Llama, Qwen, Mistral and Gemma, c_attn/c_proj/c_fc
    for GPT-2 (whose Conv1D layers are linear layers with transposed weights). Embeddings and the LM head
    are left alone."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    blocks = (".layers.", ".h.")   # where the families keep their transformer blocks
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
             if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head and any(b in f".{name}." for b in blocks)}
    if not names:
        raise ConfigError(f"setting 'lora_targets': {type(model).__name__} has no linear layers in its blocks "
                          "where sdporec looks (.layers. or .h.); name them with --lora-targets")
    return sorted(names)


def _trainable_base(model):
    """A 4-bit base made ready for adapter training (QLoRA: norms in fp32, input gradients); others as they are."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def add_lora(model, r: int, alpha: int, dropout: float, targets: Sequence[str] = ()):
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    model = _trainable_base(model)
    if targets:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})
        missing = sorted(set(targets) - set(linear))
        require(not missing, "lora_targets", f"{', '.join(missing)}: no such linear layer in {type(model).__name__} "
                f"(it has {', '.join(linear)})")

    # GPT-2's Conv1D layers store their weights transposed (fan_in_fan_out).
    transposed = any(isinstance(m, Conv1D) for m in model.modules())
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets or lora_targets(model)),
                     fan_in_fan_out=transposed, task_type="CAUSAL_LM")
    with _peft_quietly():
        return get_peft_model(model, cfg)


def enable_gradient_checkpointing(model) -> None:
    # Non-reentrant checkpointing needs no input gradients, so it works with frozen embeddings (LoRA).
    # transformers 5 renamed it activation checkpointing and keeps the old name as a deprecated alias.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class Policy:
    """The trained model and its frozen reference.

    Full fine-tuning either keeps a frozen copy (online reference) or loads the SFT checkpoint only for
    the duration of a `reference()` block (the precomputed reference pass). A new LoRA over a full SFT model uses the model with the adapter
    turned off. An SFT LoRA adapter is loaded twice: trainable as "default" (so training starts from it)
    and frozen as "reference"; only "default" is saved.
    """

    def __init__(self, model, reference_model=None, reference_adapter: str | None = None,
                 reference_path: str | None = None, dtype: str = "float32"):
        self.model, self._ref_model, self._ref_adapter = model, reference_model, reference_adapter
        self._ref_path, self._dtype = reference_path, dtype

    def to(self, device) -> "Policy":
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
            ref = _load_full(self._ref_path, self._dtype).to(next(self.model.parameters()).device).eval()
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
        if f".{name}." in n:
            p.requires_grad_(False)


def policy_from_sft(path: str, lora: bool, r: int, alpha: int, dropout: float, dtype: str,
                    resident_reference: bool = True, load_in_4bit: bool = False,
                    targets: Sequence[str] = (), chat_template: str = "auto") -> tuple[Policy, object]:
    """The policy to train and its reference. `resident_reference=False` (full fine-tuning only) keeps
    no second model in memory: the reference is loaded from `path` when asked for."""
    codec = load_codec_of(path, chat_template)
    if is_adapter(path):
        base = _trainable_base(_load_full(_adapter_base(path), dtype, load_in_4bit))
        model = attach_adapter(base, path, "default", trainable=True)
        attach_adapter(model, path, "reference", trainable=False)
        model.set_adapter("default")
        _freeze_adapter(model, "reference")
        return Policy(model, reference_adapter="reference"), codec
    model = _load_full(path, dtype, load_in_4bit)
    if lora:
        return Policy(add_lora(model, r, alpha, dropout, targets)), codec
    if not resident_reference:
        return Policy(model, reference_path=path, dtype=dtype), codec
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return Policy(model, reference_model=ref), codec


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def needs_own_base(source: str) -> bool:
    """A LoRA adapter over this source keeps its base beside it: the built-in backbone's weights exist
    nowhere else, and a GGUF file's are only loadable through the gguf package (and slowly)."""
    return source == BUILTIN or is_gguf(source)


def save_checkpoint(model, codec: ItemCodec | TextCodec, out_dir: str | Path, meta: dict,
                    base_dir: str | Path | None = None, state_dict: dict | None = None) -> None:
    """Write to `out_dir.tmp`, then swap it in: an interrupted save never leaves a half checkpoint."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; a checkpoint is written as a directory there (nothing was changed)")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model, "peft_config"):
        # Under FSDP / ZeRO-3 `state_dict` is the gathered full one (this process's parameters are shards):
        # peft picks the adapter's weights out of it.
        model.save_pretrained(str(tmp), selected_adapters=["default"], state_dict=state_dict)
        if base_dir is not None:   # hard links where the file system allows: the base is the same every save
            shutil.copytree(base_dir, tmp / "base", copy_function=_link_or_copy)
    else:
        model.save_pretrained(str(tmp), state_dict=state_dict)
    codec.save(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
