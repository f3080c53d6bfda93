"""Loading models for inference and training: sdporec checkpoints (full or adapter), any causal LM by
directory or hub name through the Auto classes, GGUF files, and 4-bit (QLoRA) loading."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sdporec.config import require_cuda_for_4bit
from sdporec.data.codec import BuiltinCodec, TextCodec, require_known_titles
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError
from sdporec.models.checkpoints import Checkpoint, is_adapter, loading, report_weights
from sdporec.models.codecs import load_codec
from sdporec.models.lora import attach_adapter, for_inference
from sdporec.models.sources import is_gguf, load_gguf_model, model_kwargs, require_no_4bit_gguf


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_weights(path: str, dtype: str, load_in_4bit: bool = False):
    if is_gguf(path):
        require_no_4bit_gguf(path, load_in_4bit)
        with loading(path):
            return load_gguf_model(path, torch_dtype(dtype))
    if not load_in_4bit:
        return _pretrained(path, dtype=torch_dtype(dtype))
    require_cuda_for_4bit(True)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("setting 'load_in_4bit': bitsandbytes is not installed (pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return _pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": torch.cuda.current_device()}
    )


def _pretrained(path: str, **kwargs):
    """`from_pretrained` with transformers' loading report checked (its own notice is silenced by the CLI)."""
    from transformers import AutoModelForCausalLM

    with loading(path):
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **model_kwargs(), **kwargs)
    report_weights(path, info.get("missing_keys", ()), info.get("unexpected_keys", ()))
    return model


def adapter_base(path: str | Path) -> str:
    local = Path(path) / "base"
    if local.is_dir():
        return str(local)
    with loading(str(path)):
        return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_codec_of(
    path: str, chat_template: str = "auto", checkpoint: Checkpoint | None = None
) -> BuiltinCodec | TextCodec:
    """The codec of a checkpoint or model (`codecs.load_codec`), load errors as one `ConfigError`."""
    with loading(path):
        return load_codec(path, chat_template, checkpoint)


def load_model(
    path: str,
    dtype: str = "float32",
    load_in_4bit: bool = False,
    chat_template: str = "auto",
    codec: BuiltinCodec | TextCodec | None = None,
):
    """A trained checkpoint (full or adapter) or any causal LM by directory, hub name or GGUF file, for
    inference, with its codec (`codec`: one already loaded from `path`)."""
    codec = codec or load_codec_of(path, chat_template)
    if is_adapter(path):
        model = attach_adapter(load_weights(adapter_base(path), dtype, load_in_4bit), path)
    else:
        model = load_weights(path, dtype, load_in_4bit)
    model.eval()
    return model, codec


@dataclass
class InferenceModel:
    """A model loaded for scoring or generation, with what its checkpoint says about using it."""

    model: object
    codec: BuiltinCodec | TextCodec
    checkpoint: Checkpoint
    domain: str  # prompt templates: the flag's, else those training recorded
    history_readout: float | None  # λ to rank with (None: not ranking)
    task: str = "candidates"  # what its prompts ask: the flag's, else what training recorded


def load_for_inference(
    path: str,
    *,
    domain: str | None = None,
    history_readout: float | None = None,
    ranking: bool = True,
    task: str | None = None,
    chat_template: str = "auto",
    dtype: str = "float32",
    load_in_4bit: bool = False,
    device: str | torch.device = "auto",
    samples: Sequence[Sample] = (),
    samples_from: str = "",
) -> InferenceModel:
    """The one way `evaluate`, `recommend`, `Recommender.load` and `pipeline` load a model: its record read
    once (domain, task, history readout), its codec, every title of `samples` (read from `samples_from`) checked
    against the codec before any weight loads, then the weights (a float32 adapter merged into them,
    `lora.for_inference`), placed on `device`."""
    checkpoint = Checkpoint.read(path)
    chosen_domain = checkpoint.domain(domain)
    readout = checkpoint.history_readout(history_readout) if ranking else None
    codec = load_codec_of(path, chat_template, checkpoint)
    require_known_titles(codec, path, samples, samples_from)
    model, codec = load_model(path, dtype, load_in_4bit, chat_template, codec)
    model = for_inference(model, dtype, load_in_4bit)
    model.to(device if isinstance(device, torch.device) else pick_device(device))
    return InferenceModel(model, codec, checkpoint, chosen_domain, readout, checkpoint.task(task))


def quiet_transformers() -> None:
    """sdporec's own progress bars and messages cover the work; transformers' per-load bars and notices
    are noise in its output (the CLI, the Python API and `Recommender.load` call this)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
