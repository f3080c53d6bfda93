"""The error types every layer raises and the two helpers that raise or report them: the leaf of the package.

`ConfigError`: a setting is wrong (named as `setting 'name': ...`); `DataError`: an input file is, naming the
file, the row and the field; `OutputError`: an output could not be written; `BusyError`: another process
writes the same output folder. The CLI prints each as one line and exits with status 2.
"""

from __future__ import annotations

import os
import sys


class ConfigError(ValueError):
    pass


class DataError(ValueError):
    """Bad input data. The message always names the file, the row and the field."""

    def __init__(self, path: str | os.PathLike, row: int | str | None, fld: str | None, problem: str):
        self.path, self.row, self.field, self.problem = str(path), row, fld, problem
        where = [f"file {self.path}"]
        if row is not None:
            where.append(f"row {row}")
        if fld is not None:
            where.append(f"field '{fld}'")
        super().__init__(f"{', '.join(where)}: {problem}")


class OutputError(Exception):
    """An output could not be written (disk full, a size limit, permissions): the message names the file and
    says that nothing complete was replaced."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"cannot write {self.path}: {problem}; nothing complete there was replaced")


class BusyError(Exception):
    """Another process is writing the same output folder."""


def brief(value: object, limit: int = 80) -> str:
    """A repr of `value` of bounded size, whatever its size or nesting (reprlib elides the rest): values a
    user wrote (a YAML setting, a title) may be of any size, and a message must not grow with them."""
    import reprlib

    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel = 2
    short.maxlist = short.maxdict = short.maxtuple = short.maxset = 4
    short.maxstring = short.maxother = short.maxlong = limit
    text = short.repr(value)
    return text if len(text) <= 2 * limit else text[: 2 * limit] + "..."


def require(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"setting '{name}': {problem}")


def warn(message: str) -> None:
    """A notice the user should read (a setting overridden, weights not loaded): one line on stderr."""
    print(f"sdporec: warning: {message}", file=sys.stderr)
