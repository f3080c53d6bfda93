"""How every command runs once its config is ready, from the CLI and the Python API alike: as the only writer of
its output (`OutputLock` on `out`, taken by the main process before anything is written) and with a model's own
code allowed only where its config says `trust_remote_code`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

from sdporec.models.sources import remote_code
from sdporec.outputs import OutputLock

T = TypeVar("T")


def run_command(command: Callable[[T], dict], cfg: T) -> dict:
    out = getattr(cfg, "out", "")
    main = os.environ.get("RANK", "0") == "0"  # under torchrun / accelerate launch only the main process writes
    with (
        OutputLock(out) if out and main else contextlib.nullcontext(),
        remote_code(getattr(cfg, "trust_remote_code", False)),
    ):
        return command(cfg)
