"""How every command runs once its config is ready, from the CLI and the Python API alike: as the only writer of
its output (`OutputLock` on `out`, taken by the main process before anything is written) and with a model's own
code allowed only where its config says `trust_remote_code`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

from sdporec.errors import ConfigError
from sdporec.models.sources import remote_code
from sdporec.outputs import OutputLock

T = TypeVar("T")


def _distributed() -> tuple[Callable, ...]:
    """The commands that share their work over the processes of torchrun / accelerate launch."""
    from sdporec.commands.evaluate import run_evaluate
    from sdporec.commands.preference import run_preference
    from sdporec.commands.sft import run_sft

    return run_sft, run_preference, run_evaluate


def run_command(command: Callable[[T], dict], cfg: T) -> dict:
    out = getattr(cfg, "out", "")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and command not in _distributed():
        name = command.__name__.removeprefix("run_")
        raise ConfigError(
            f"{name} runs in one process: launch it without torchrun or accelerate launch "
            "(sft, dpo, sdpo and evaluate take several)"
        )
    main = os.environ.get("RANK", "0") == "0"  # under torchrun / accelerate launch only the main process writes
    with (
        OutputLock(out) if out and main else contextlib.nullcontext(),
        remote_code(getattr(cfg, "trust_remote_code", False)),
    ):
        return command(cfg)
