"""Output directories: before a command runs, whether it may write there (never into a file, never over an
earlier run's outputs without `--overwrite`, never into or over one of its inputs), the lock that makes a
command the folder's only writer, and removing an earlier run's outputs when told to."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from sdporec.errors import BusyError, ConfigError, OutputError, warn


def not_a_file(path: str, name: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"setting '{name}': {path} is a file; give a directory (it is created if missing)")
    return out


def claim_out_dir(
    path: str, outputs: tuple[str, ...], overwrite: bool, resume: bool | None = None, name: str = "out"
) -> None:
    """Check `path` may receive a command's `outputs` (names inside it) before anything runs: it must not be
    a file, and outputs of an earlier run there are replaced only with `--overwrite` (or continued with
    `--resume`, where the command has it). Checks only: nothing is written or removed here."""
    out = not_a_file(path, name)
    found = [o for o in outputs if (out / o).exists()] if out.is_dir() else []
    if found and not (overwrite or resume):
        hint = "--resume to continue it, or " if resume is not None else ""  # None: the command cannot resume
        raise ConfigError(
            f"setting '{name}': {path} already holds outputs of an earlier run "
            f"({', '.join(found[:4])}); add {hint}--overwrite to replace them, or choose another --out"
        )


def clear_outputs(path: str, outputs: tuple[str, ...]) -> None:
    """Remove an earlier run's `outputs` from `path` (after `--overwrite`), so none of them is left stale."""
    for o in outputs:
        target = Path(path) / o
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


# Where `--overwrite` keeps an earlier run's outputs until the new run has finished (`SetAside`).
REPLACED = ".replaced"


class SetAside:
    """An earlier run's outputs in `path`, moved into `path/.replaced` while a new run (`--overwrite`) writes
    its own: they come back if the new run fails (`restore`) and go once it has finished (`drop`). One left by
    a killed run is removed, with a warning, when the next `--overwrite` run starts."""

    def __init__(self, path: str | os.PathLike, outputs: tuple[str, ...]):
        self.out, self.outputs = Path(path), outputs
        self.aside = self.out / REPLACED
        if self.aside.is_dir():
            warn(f"{self.aside} holds the outputs of a run before one that was stopped; --overwrite removes them")
            shutil.rmtree(self.aside, ignore_errors=True)
        found = [o for o in outputs if (self.out / o).exists() or (self.out / o).is_symlink()]
        if found:
            self.aside.mkdir(parents=True)
            for o in found:
                os.replace(self.out / o, self.aside / o)

    @property
    def held(self) -> bool:
        """Whether an earlier run's outputs are set aside (none where OUT held none)."""
        return self.aside.is_dir()

    def restore(self) -> bool:
        """This run's outputs replaced by the earlier run's; nothing happens (False) where none were set aside,
        so a failed run into a new folder keeps what it wrote."""
        if not self.held:
            return False
        clear_outputs(str(self.out), self.outputs)
        for p in self.aside.iterdir():
            os.replace(p, self.out / p.name)
        self.aside.rmdir()
        return True

    def drop(self) -> None:
        shutil.rmtree(self.aside, ignore_errors=True)


def require_apart(out: str, inputs: dict[str, str | list[str]], name: str = "out") -> None:
    """An output (file or folder) that is, contains, or lies inside one of the command's inputs (setting name
    -> path or paths; hub names and empty settings are skipped) would overwrite or mix with what it reads."""
    if not out:
        return
    target = Path(out).resolve()
    for setting_name, paths in inputs.items():
        for path in [paths] if isinstance(paths, str) else paths:
            for one in str(path).split(","):  # compare's seeds of one model, joined by commas
                source = Path(one).resolve() if one else None
                if source is None or not source.exists():
                    continue
                if target == source or target.is_relative_to(source) or source.is_relative_to(target):
                    how = "is" if target == source else "lies inside" if target.is_relative_to(source) else "holds"
                    raise ConfigError(
                        f"setting '{name}': {out} {how} the input {one} (setting '{setting_name}'); "
                        "an output must be apart from what the command reads: choose another --out"
                    )


class OutputLock:
    """One writer per output: an advisory lock (`flock`) on `.NAME.lock` beside the output file or folder NAME,
    taken before anything is written and held until the command ends. A second command into the same output
    is refused at once, naming the process that holds it; the lock dies with its holder, so a killed run
    never blocks the next. The lock file is removed on release. Where the parent folder cannot take it (a
    read-only mount holding a writable OUT), an output folder is locked by `.sdporec.lock` inside it."""

    def __init__(self, out: str | os.PathLike, setting: str = "out"):
        self.out, self.setting = Path(out), setting
        where = self.out.resolve()  # `--out .` has no name of its own
        self.path = where.parent / f".{where.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise BusyError(
                    f"setting '{self.setting}': {self.out} is being written by another sdporec process "
                    f"({holder}); wait for it to end, or choose another --{self.setting}"
                ) from None
            try:  # the holder before us may have removed the file it locked: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}".encode(),
        )
        self.fd = fd
        return self

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            inside = self.out.resolve() / ".sdporec.lock"
            if self.path == inside or (self.out.exists() and not self.out.is_dir()):
                raise OutputError(
                    self.path, f"{e.strerror or e} (the lock that makes this command OUT's only writer)"
                ) from None
            self.path = inside
            return self._open()

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "pid unknown"
        except OSError:
            return "pid unknown"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still locked: a process that opened it re-checks the inode
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
