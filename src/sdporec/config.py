"""One typed config per command: the dataclass defines the flags, YAML files fill it, flags override.

A field's metadata carries its help text (`opt(default, "help")`) and, optionally, its choices. Values
resolve in this order: the dataclass default, then `--config FILE.yaml`, then flags given on the command
line. `validate()` on each config checks values and names the field at fault. The resolved config is
written as `config.yaml` next to a run's outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .samples import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def opt(default: Any, help: str, choices: tuple | None = None, positional: bool = False):
    kw = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return dataclasses.field(metadata={"help": help, "choices": choices, "positional": positional}, **kw)


def _base_type(tp) -> tuple[type, bool]:
    """(scalar or list element type, is_list) for str, int, float, bool, X | None and list[X]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", metavar="FILE.yaml", help="read settings from a YAML file; flags override it")
    for f in dataclasses.fields(cls):
        tp, is_list = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{meta.get('help', '')} (default: {default})"
        # SUPPRESS: an absent flag leaves no attribute, so YAML values are not overwritten by defaults.
        kw: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("positional"):
            parser.add_argument(f.name, nargs="+" if is_list else "?", type=tp, **kw)
        elif tp is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=tp,
                                nargs="+" if is_list else None, **kw)


def resolve(cls: type[T], args: argparse.Namespace) -> T:
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "config", None):
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a mapping of setting names to values")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise ConfigError(f"{args.config}: unknown setting(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k in names})
    cfg = cls(**values)
    _check_types(cfg)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def _check_types(cfg) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        tp, is_list = _base_type(hints[f.name])
        if value is None:
            continue
        items = value if is_list else [value]
        if is_list and not isinstance(value, list):
            raise ConfigError(f"setting '{f.name}': expected a list, got {value!r}")
        for v in items:
            ok = isinstance(v, tp) and not (tp is not bool and isinstance(v, bool))
            if tp is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise ConfigError(f"setting '{f.name}': expected {tp.__name__}, got {v!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"setting '{f.name}': {value!r} is not one of {', '.join(map(str, choices))}")


def require(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"setting '{name}': {problem}")


def require_cuda_for_4bit(load_in_4bit: bool) -> None:
    """4-bit NF4 weights come from bitsandbytes, whose kernels run on CUDA only."""
    import torch

    require(not load_in_4bit or torch.cuda.is_available(), "load_in_4bit",
            "4-bit NF4 loading (bitsandbytes) needs a CUDA GPU; none is available here")


def save_config(cfg, out_dir: str | Path, name: str = "config.yaml") -> None:
    atomic_write_text(Path(out_dir) / name, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
