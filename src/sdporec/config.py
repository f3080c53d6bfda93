"""Checks and the saved config that library code and commands share: inputs that must exist, the device,
4-bit loading's GPU, and `save_config` (the resolved config written as `config.yaml` beside a run's outputs).
The commands' typed configs and their flags are in `sdporec.commands.settings`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from sdporec.errors import ConfigError, require
from sdporec.files import atomic_write_text
from sdporec.runs import CONFIG


def require_cuda_for_4bit(load_in_4bit: bool) -> None:
    """4-bit NF4 weights come from bitsandbytes, whose kernels run on CUDA only."""
    import torch

    require(
        not load_in_4bit or torch.cuda.is_available(),
        "load_in_4bit",
        "4-bit NF4 loading (bitsandbytes) needs a CUDA GPU; none is available here",
    )


def config_text(cfg) -> str:
    """The resolved config as the YAML saved beside a run's outputs."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def save_config(cfg, out_dir: str | Path, name: str = CONFIG) -> None:
    atomic_write_text(Path(out_dir) / name, config_text(cfg))


def require_input(path: str, name: str) -> None:
    """An input file that must exist before anything is loaded or written."""
    if path and not Path(path).is_file():
        problem = "is a directory; give a file" if Path(path).is_dir() else "no such file"
        raise ConfigError(f"setting '{name}': {path}: {problem}")


def require_device(name: str) -> None:
    """`auto`, `cpu`, `cuda` or `cuda:N` that exists here."""
    import torch

    try:
        device = torch.device(name) if name != "auto" else None
    except RuntimeError:
        raise ConfigError(f"setting 'device': {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device is None or device.type == "cpu":
        return
    require(device.type == "cuda", "device", f"{name!r}: only auto, cpu, cuda and cuda:N are supported")
    require(torch.cuda.is_available(), "device", f"{name}: no CUDA GPU is available here; use cpu or auto")
    require(
        device.index is None or device.index < torch.cuda.device_count(),
        "device",
        f"{name}: this machine has {torch.cuda.device_count()} CUDA device(s)",
    )
