"""Checkpoint files: what a checkpoint records, errors while reading one, and writing one whole.

A checkpoint directory holds either full weights or a LoRA adapter (`adapter_config.json`), the
tokenizer with `sdporec_codec.json`, and `sdporec_checkpoint.json` (what it was trained from). A LoRA
adapter over the built-in backbone keeps that backbone's weights in `base/`, since they exist nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sdporec.data.codec import BuiltinCodec, TextCodec
from sdporec.errors import ConfigError, require, warn
from sdporec.files import read_json_object, swap_in_dir, writing
from sdporec.models.builtin import BUILTIN
from sdporec.models.sources import is_gguf
from sdporec.outputs import not_a_file

META_FILE = "sdporec_checkpoint.json"
CODEC_FILE = "sdporec_codec.json"


# Version of the record's layout: 1 adds `format` itself and names `learned_history` (was `history_trained`).
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """What a model directory records about itself, read once, here and nowhere else: `sdporec_checkpoint.json`
    (stage, what it was trained from, its training config, the history readout) and `sdporec_codec.json` (the
    codec). A GGUF file, a hub name or a directory sdporec did not write has empty records."""

    path: str
    meta: dict = field(default_factory=dict)  # sdporec_checkpoint.json ({} where there is none)
    codec: dict = field(default_factory=dict)  # sdporec_codec.json ({} where there is none)

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        meta_file, codec_file = Path(path) / META_FILE, Path(path) / CODEC_FILE
        meta = read_json_object(meta_file, "the checkpoint's record is damaged") if meta_file.is_file() else {}
        codec = read_json_object(codec_file, "the checkpoint's codec record is damaged") if codec_file.is_file() else {}
        return cls(str(path), meta, codec)

    @property
    def own(self) -> bool:
        """Written by sdporec (training, export, a saved base): every weight it holds must load."""
        return is_own_checkpoint(self.path)

    @property
    def format(self) -> int:
        return int(self.meta.get("format", 0))

    @property
    def stage(self) -> str | None:
        return self.meta.get("stage")

    @property
    def kind(self) -> str | None:
        """The codec: builtin (the built-in backbone), text or hybrid; None without a record (any model's
        tokenizer). Records written before the built-in codec had its name say `items`."""
        kind = self.codec.get("kind")
        return "builtin" if kind == "items" else kind

    @property
    def adapter(self) -> bool:
        return is_adapter(self.path)

    @property
    def learned_history(self) -> bool:
        """Whether this checkpoint, or one it was trained from, learned the history's next-item loss
        (`--history-weight` above 0): its history readout then means something."""
        learned = self.meta.get("learned_history", self.meta.get("history_trained"))
        return bool(learned or self.recorded("history_weight", 0) > 0)

    def domain(self, flag: str | None) -> str:
        """The prompt domain for a command that loads this checkpoint: the one its training recorded unless
        `flag` names one; a flag that disagrees is honoured with a warning. Without either: music."""
        return self._prompt_setting("domain", flag, "music", "{} prompts")

    def task(self, flag: str | None) -> str:
        """The task its prompts ask (`data.prompts.TASKS`), as `domain` chooses. Without either: candidates."""
        return self._prompt_setting("task", flag, "candidates", "the {} task")

    def recorded(self, name: str, default=None):
        """A setting as its training recorded it (`default` where it did not), without a word said."""
        return (self.meta.get("config") or {}).get(name) or default

    def _prompt_setting(self, name: str, flag: str | None, default: str, what: str) -> str:
        recorded = self.recorded(name)
        if flag is None:
            return recorded or default
        if recorded and recorded != flag:
            warn(f"{self.path} was trained on {what.format(recorded)}; using --{name} {flag} as asked")
        return flag

    @property
    def recorded_readout(self) -> float:
        """The history readout's weight training chose on validation (0: none chosen), without a word said."""
        return float(self.meta.get("history_readout") or 0.0)

    def history_readout(self, flag: float | None) -> float:
        """The history readout's weight λ to rank with: `flag`, else the one training chose on validation
        (said when above 0), else 0, the prompt alone."""
        if flag is not None:
            return flag
        weight = self.recorded_readout
        if weight:
            print(
                f"ranking with the history readout at λ {weight:g}, chosen on validation in training and recorded "
                f"in {self.path} (--history-readout 0: the prompt alone)",
                file=sys.stderr,
            )
        return weight


def is_own_checkpoint(path: str | Path) -> bool:
    """`Checkpoint.own` without reading the record (a damaged one is still ours)."""
    return (Path(path) / META_FILE).is_file()


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def report_weights(path: str | Path, missing, unexpected) -> None:
    """Weights a model expected but the checkpoint lacks (left as initialised: random) and weights the
    checkpoint holds that the model does not use: an error for sdporec's own checkpoints, a warning else."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if not (missing or unexpected):
        return
    parts = [
        f"{len(missing)} weight(s) missing, left randomly initialised ({', '.join(missing[:6])}"
        f"{', ...' if len(missing) > 6 else ''})"
        if missing
        else "",
        f"{len(unexpected)} weight(s) in the files that the model does not use ({', '.join(unexpected[:6])}"
        f"{', ...' if len(unexpected) > 6 else ''})"
        if unexpected
        else "",
    ]
    detail = "; ".join(p for p in parts if p)
    if is_own_checkpoint(path):
        raise ConfigError(
            f"setting 'model': {path} is an sdporec checkpoint that does not load whole: {detail}; "
            "it is damaged, or its files were changed after training"
        )
    warn(f"{path}: {detail}")


def _pickles(path: str) -> str:
    """The pickled weight files of a model directory, for a message."""
    found = sorted(p.name for p in Path(path).glob("*.bin")) if Path(path).is_dir() else []
    return f"{', '.join(found[:3])} in {path}" if found else path


@contextlib.contextmanager
def loading(path: str, setting: str = "model") -> Iterator[None]:
    """Errors that transformers, peft or safetensors raise while reading a model or tokenizer become one
    `ConfigError` naming the setting and the path: a pickled `.bin` that holds more than tensors (refused by
    `torch.load(weights_only=True)`: it could run code) and a model that needs its own code included."""
    import pickle

    try:
        yield
    except ConfigError:
        raise
    except pickle.UnpicklingError:
        raise ConfigError(
            f"setting '{setting}': {_pickles(path)} is a pickle that holds more than plain tensors, so loading it "
            "could run code; sdporec loads pickled weights only as plain tensors and refused it. Use the model's "
            "safetensors files from a source you trust"
        ) from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise _cannot_load(path, setting, e) from e
        raise ConfigError(
            f"setting '{setting}': {path} needs its own Python code to load (a model type transformers "
            "does not know); sdporec runs no code from a model unless you add --trust-remote-code "
            "(trust_remote_code=True in Python)"
        ) from None
    except (OSError, KeyError, RuntimeError, TypeError) as e:
        raise _cannot_load(path, setting, e) from e


def _cannot_load(path: str, setting: str, e: BaseException) -> ConfigError:
    text = " ".join(str(e).split()) or type(e).__name__
    return ConfigError(f"setting '{setting}': cannot load {path}: {text[:300]}{'...' if len(text) > 300 else ''}")


def needs_own_base(source: str) -> bool:
    """A LoRA adapter over this source keeps its base beside it: the built-in backbone's weights exist
    nowhere else, and a GGUF file's are only loadable through the gguf package (and slowly)."""
    return source == BUILTIN or is_gguf(source)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_codec(codec: BuiltinCodec | TextCodec, out_dir: str | Path) -> None:
    """The codec as a checkpoint keeps it: the tokenizer (loadable with `AutoTokenizer`) and its record."""
    codec.tokenizer.save_pretrained(str(out_dir))
    (Path(out_dir) / CODEC_FILE).write_text(json.dumps(codec.record()) + "\n")


@contextmanager
def _checkpoint_tmp(out_dir: Path, meta: dict) -> Iterator[Path]:
    """`out_dir.tmp`, empty, for the block to write a checkpoint into; then the record is added and it is swapped
    in whole. A failed write is an `OutputError` naming `out_dir`, the half-written `.tmp` removed and the
    earlier checkpoint left as it was."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; a checkpoint is written as a directory there (nothing was changed)")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    with writing(out_dir):
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            yield tmp
            (tmp / META_FILE).write_text(json.dumps({**meta, "format": CHECKPOINT_FORMAT}, indent=2) + "\n")
            swap_in_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def save_checkpoint(
    model,
    codec: BuiltinCodec | TextCodec,
    out_dir: str | Path,
    meta: dict,
    base_dir: str | Path | None = None,
    state_dict: dict | None = None,
) -> None:
    """Write to `out_dir.tmp`, then swap it in: an interrupted save never leaves a half checkpoint."""
    with _checkpoint_tmp(Path(out_dir), meta) as tmp:
        if hasattr(model, "peft_config"):
            # Under FSDP / ZeRO-3 `state_dict` is the gathered full one (this process's parameters are shards):
            # peft picks the adapter's weights out of it.
            model.save_pretrained(str(tmp), selected_adapters=["default"], state_dict=state_dict)
            if base_dir is not None:  # hard links where the file system allows: the base is the same every save
                shutil.copytree(base_dir, tmp / "base", copy_function=_link_or_copy)
        else:
            model.save_pretrained(str(tmp), state_dict=state_dict)
        save_codec(codec, tmp)


def save_initial_model(model, tokenizer, out_dir: str | Path, meta: dict) -> None:
    """A model built from a config (`init-model`), before any training: weights, tokenizer and the record,
    swapped in whole as a trained checkpoint is."""
    with _checkpoint_tmp(Path(out_dir), meta) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))


def claim_checkpoint_dir(path: str, overwrite: bool, name: str = "out") -> None:
    """A directory a command writes a checkpoint into, replacing it whole: new, empty, or (with
    `--overwrite`) an earlier sdporec checkpoint; never a file or a folder holding anything else."""
    out = not_a_file(path, name)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_own_checkpoint(out):
        raise ConfigError(
            f"setting '{name}': {path} holds files that are not an sdporec checkpoint; the checkpoint "
            "replaces the whole directory, so give a new or empty one"
        )
    require(
        overwrite, name, f"{path} already holds a checkpoint; add --overwrite to replace it, or choose another --out"
    )
