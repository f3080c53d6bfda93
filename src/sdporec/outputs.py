"""Output directories: before a command runs, whether it may write there (never into a file, never over an
earlier run's outputs without `--overwrite`), and removing an earlier run's outputs when told to."""

from __future__ import annotations

import shutil
from pathlib import Path

from sdporec.errors import ConfigError, require


def not_a_file(path: str, name: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"setting '{name}': {path} is a file; give a directory (it is created if missing)")
    return out


def claim_out_dir(path: str, outputs: tuple[str, ...], overwrite: bool, resume: bool = False,
                  name: str = "out") -> None:
    """Check `path` may receive a command's `outputs` (names inside it) before anything runs: it must not be
    a file, and outputs of an earlier run there are replaced only with `--overwrite` (or continued with
    `--resume`, where the command has it). Checks only: nothing is written or removed here."""
    out = not_a_file(path, name)
    found = [o for o in outputs if (out / o).exists()] if out.is_dir() else []
    if found and not (overwrite or resume):
        hint = "--resume to continue it, or " if "checkpoints" in outputs else ""
        raise ConfigError(f"setting '{name}': {path} already holds outputs of an earlier run "
                          f"({', '.join(found[:4])}); add {hint}--overwrite to replace them, or choose another --out")


def clear_outputs(path: str, outputs: tuple[str, ...]) -> None:
    """Remove an earlier run's `outputs` from `path` (after `--overwrite`), so none of them is left stale."""
    for o in outputs:
        target = Path(path) / o
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def require_outside(model: str, out: str, overwrite: bool) -> None:
    """`--overwrite` clears OUT's earlier outputs, so the model a run starts from must not lie among them."""
    model_path, out_path = Path(model).resolve(), Path(out).resolve()
    require(not (overwrite and model_path.exists() and model_path.is_relative_to(out_path)), "overwrite",
            f"the model to start from, {model}, lies inside --out {out}, whose outputs --overwrite removes; "
            "choose another --out")
