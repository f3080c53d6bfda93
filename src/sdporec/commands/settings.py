"""One typed config per command: the dataclass defines the flags, YAML files fill it, flags override.

A field's metadata carries its help text (`setting(default, "help")`) and, optionally, its choices. Values
come in this order (`from_arguments`): the dataclass default, then `--config FILE.yaml`, then flags given on
the command line. `ready(config)` checks its values (each config's `check`, which reads nothing) and names the field at
fault, then resolves what they name (each config's `resolve`). The resolved config is
written as `config.yaml` next to a run's outputs (`sdporec.config.save_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

import yaml

from sdporec.errors import ConfigError, DataError, brief
from sdporec.files import read_text

T = TypeVar("T")


def setting(default: Any, help: str, choices: tuple | None = None, positional: bool = False):
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


class OneOf:
    """The argparse type of a positional with choices. Before Python 3.12, argparse checks an omitted optional
    positional's default (SUPPRESS, which keeps YAML values) against `choices` and rejects the command; this
    type checks the choices itself and lets SUPPRESS through unchanged."""

    def __init__(self, tp: type, choices: tuple):
        self.tp, self.choices = tp, choices

    def __call__(self, text: str):
        if text is argparse.SUPPRESS:
            return text
        value = self.tp(text)
        if value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {allowed})")
        return value


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", metavar="FILE.yaml", help="read settings from a YAML file; flags override it")
    for f in dataclasses.fields(cls):
        tp, is_list = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices, positional = meta.get("choices"), meta.get("positional")
        listed = f": {', '.join(choices)}" if choices and positional else ""  # argparse lists an option's own
        help_text = f"{meta.get('help', '')}{listed}"
        if default not in ("", None, []) and "(default:" not in help_text:  # nothing to show, or said in the help
            help_text += f" (default: {default})"
        # SUPPRESS: an absent flag leaves no attribute, so YAML values are not overwritten by defaults.
        kw: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if positional:
            parser.add_argument(f.name, nargs="+" if is_list else "?", type=OneOf(tp, choices) if choices else tp, **kw)
            continue
        if choices:
            kw["choices"] = choices
        if tp is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", dest=f.name, type=tp, nargs="+" if is_list else None, **kw
            )


def from_arguments(cls: type[T], args: argparse.Namespace) -> T:
    """A config of `cls` from parsed arguments: defaults, then the YAML file, then the flags given."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "config", None):
        loaded = _read_yaml(args.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a mapping of setting names to values")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise ConfigError(f"{args.config}: unknown setting(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k in names})
    return configure(cls, None, values)


def configure(cls: type[T], config: T | None = None, settings: dict[str, Any] | None = None) -> T:
    """A checked config of `cls`: `config` as given, or one made from `settings` (setting name -> value,
    the rest defaults). The one path from the CLI's flags and the Python API's arguments to a config."""
    settings = settings or {}
    if config is not None and settings:
        raise ConfigError(f"give a {cls.__name__} or settings, not both")
    if config is None:
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown setting(s) of {cls.__name__}: {', '.join(unknown)}")
        config = cls(**settings)
    elif not isinstance(config, cls):
        raise ConfigError(f"expected a {cls.__name__}, got a {type(config).__name__}")
    return ready(config)


def ready(config: T) -> T:
    """The one way a config becomes ready to run, whether it came from flags, YAML, the Python API or the
    pipeline (its stages' configs): its values' types, then its own checks, which read nothing (`check`), then
    the step that reads what it names (`resolve`: model sources and checkpoint records, default learning rate
    and history readouts, the device, input files, the output directory). The runner then saves it."""
    _check_types(config)
    if hasattr(config, "check"):
        config.check()
    if hasattr(config, "resolve"):
        config.resolve()
    return config


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (`*name`): a few lines of them expand to gigabytes ("billion laughs"), and a
    config has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not accepted in a config: write the value out",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


def _read_yaml(path: str) -> object:
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_NoAliasLoader) or {}  # noqa: S506 - a SafeLoader
    except RecursionError:
        raise DataError(path, None, None, "not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        row = f"line {mark.line + 1}" if mark is not None else None
        raise DataError(path, row, None, f"not valid YAML ({getattr(e, 'problem', None) or e})") from None


def _check_types(cfg) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        tp, is_list = _base_type(hints[f.name])
        if value is None:
            optional = typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType) and type(
                None
            ) in typing.get_args(hints[f.name])
            if not optional:
                raise ConfigError(f"setting '{f.name}': expected {tp.__name__}, got null")
            continue
        items = value if is_list else [value]
        if is_list and not isinstance(value, list):
            raise ConfigError(f"setting '{f.name}': expected a list, got {brief(value)}")
        for v in items:
            ok = isinstance(v, tp) and not (tp is not bool and isinstance(v, bool))
            if tp is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise ConfigError(f"setting '{f.name}': expected {tp.__name__}, got {brief(v)}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"setting '{f.name}': {brief(value)} is not one of {', '.join(map(str, choices))}")
