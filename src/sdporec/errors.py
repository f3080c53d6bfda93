"""The error types every layer raises and the two helpers that raise or report them: the leaf of the package.

`ConfigError`: a setting is wrong (named as `setting 'name': ...`); `DataError`: an input file is, naming the
file, the row and the field. The CLI prints either as one line and exits with status 2.
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


def require(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"setting '{name}': {problem}")


def warn(message: str) -> None:
    """A notice the user should read (a setting overridden, weights not loaded): one line on stderr."""
    print(f"sdporec: warning: {message}", file=sys.stderr)
