"""Reading and writing files: users' text files in the encodings they come in, and writes that never leave
half a file or half a directory behind (a temporary beside the target, then one rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sdporec.errors import DataError, OutputError, warn


def _write_failure(e: BaseException) -> str | None:
    """What went wrong, where `e` is a failed write (an OSError, or safetensors' own error for one); else None."""
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    if type(e).__name__ == "SafetensorError":
        return " ".join(str(e).split())[:200]
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """A failed write inside the block (disk full, a file size limit, permissions) becomes one `OutputError`
    naming `path`."""
    try:
        yield
    except OutputError:
        raise
    except Exception as e:
        problem = _write_failure(e)
        if problem is None:
            raise
        raise OutputError(path, problem) from e


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write; renamed onto `path` when the block ends, removed
    if it raises: a failure never leaves half a file. The file gets the permissions `open()` would give. A
    failed write is an `OutputError` naming `path`."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`text` as UTF-8 at `path`, through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def output_set(out_dir: str | os.PathLike, last: str) -> Iterator[Path]:
    """A command's outputs written as one set: the block writes them into a temporary folder inside `out_dir`;
    when it ends they replace their namesakes there, `last` (the file that describes the set, such as
    config.yaml) removed first and put in place last, so it never describes files that are not there. A
    failure inside the block leaves `out_dir` as it was; a failed write is an `OutputError`."""
    out = Path(out_dir)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out, prefix=".writing-"))
    try:
        with writing(out):
            yield stage
        names = sorted((p.name for p in stage.iterdir()), key=lambda name: (name == last, name))
        with writing(out / last):
            (out / last).unlink(missing_ok=True)
            for name in names:
                target = out / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(stage / name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def swap_in_dir(tmp: Path, out: Path) -> None:
    """Put the finished directory `tmp` in place of `out`: the old one is renamed aside first and removed last,
    so at every moment `out` is either the old directory or the new one (or, for an instant, absent)."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _no_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which is not a number JSON allows")


def parse_json(text: str, finite: bool = True) -> object:
    """`json.loads`, refusing NaN and Infinity (Python's json module accepts them) unless `finite` is False."""
    return json.loads(text, parse_constant=_no_constant) if finite else json.loads(text)


def read_jsonl(path: str | os.PathLike, finite: bool = True, text: str | None = None) -> list[tuple[int, object]]:
    """(line number, value) of every non-empty line of a JSON Lines file (`read_text` decoding, unless its
    `text` is given). A last line that does not parse and has no line break after it was cut short by a kill or
    a full disk: it is left out with a warning naming the file. Any other line that does not parse, or holds
    NaN or Infinity (unless `finite` is False), is a `DataError` naming the file and line."""
    text = read_text(path) if text is None else text
    lines = text_lines(text)
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, parse_json(line, finite)))
        except json.JSONDecodeError as e:
            if n == len(lines) and not text.endswith("\n"):
                warn(f"file {path}: line {n} is cut short (the writer was stopped); it is left out")
                continue
            raise DataError(path, f"line {n}", None, f"not valid JSON ({e})") from None
        except ValueError as e:
            raise DataError(path, f"line {n}", None, str(e)) from None
    return rows


def text_lines(text: str) -> list[str]:
    """Lines split at '\n' (and a '\r' before it) only: `str.splitlines` also splits at U+0085, U+2028 and
    other marks that JSON Lines written with ensure_ascii=False keep inside titles."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_text(path: str | os.PathLike) -> str:
    """A user's text file: UTF-8, with or without a byte-order mark, or UTF-16 with one (what Windows tools
    write). Anything else is a `DataError` naming the line and column of the first byte that is not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a directory, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, None, "no such file") from None
    except OSError as e:
        raise DataError(path, None, None, f"cannot be read ({e.strerror or e})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DataError(path, None, None, f"starts like UTF-16 text but byte {e.start} is not") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            path,
            f"line {line}",
            None,
            f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); save the file as UTF-8",
        ) from None
    if "\x00" in text:
        raise DataError(
            path,
            f"line {text.count(chr(10), 0, text.index(chr(0))) + 1}",
            None,
            "holds a NUL character: a binary file, not text",
        )
    return text


def read_json_object(path: str | os.PathLike, context: str = "") -> dict:
    """A JSON file holding one object (`read_text` decoding); anything else is a `DataError`, its message
    ending in `context` (what a damaged file means) where given."""
    tail = f"; {context}" if context else ""
    try:
        obj = parse_json(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, None, None, f"not valid JSON ({e}){tail}") from None
    except ValueError as e:
        raise DataError(path, None, None, f"{e}{tail}") from None
    if not isinstance(obj, dict):
        raise DataError(path, None, None, f"expected a JSON object{tail}")
    return obj
