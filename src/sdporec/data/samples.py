"""Samples and their files.

A sample is one recommendation question: a user's history (oldest first), the candidate titles in the
order the prompt shows them, and the target title. We read the paper's JSON (one array of objects with
`historyList`, `itemList`, `trueSelection`) and JSON Lines with the same fields, and write JSON Lines.
Every problem with an input file raises `DataError`, naming the file, the row and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sdporec.errors import DataError
from sdporec.files import parse_json, read_jsonl, read_text, write_jsonl

SEP = "::"


@dataclass
class Sample:
    history: list[str]
    candidates: list[str]
    target: str
    user: str | None = None
    # Stable identity of the sample inside its split; seeds every per-sample random draw.
    key: str = field(default="", compare=False)
    # Where the sample came from ("line 3" of JSON Lines, "7" of an array), for error messages.
    row: str | None = field(default=None, compare=False)

    def content_key(self) -> str:
        """What the sample asks (history, candidates, target), hashed: evaluations of the same questions are
        paired by it whatever their files' names, order or row numbers."""
        text = json.dumps([self.history, self.candidates, self.target], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]

    def to_json(self) -> dict:
        out = {"historyList": self.history, "itemList": self.candidates, "trueSelection": self.target}
        if self.user is not None:
            out["user"] = self.user
        return out


def write_samples(path: str | os.PathLike, samples: Iterable[Sample]) -> None:
    write_jsonl(path, (s.to_json() for s in samples))


def read_samples(path: str | os.PathLike, split: str | None = None) -> list[Sample]:
    """Read the paper's JSON array or JSON Lines. `split` names the samples' keys (default: file stem)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "no such file")
    text = read_text(path)
    rows = _parse_rows(path, text)
    known = _known_titles(rows)
    split = split or path.stem
    return [_to_sample(path, row_id, obj, known, f"{split}:{i}") for i, (row_id, obj) in enumerate(rows)]


def sample_error(path: str | os.PathLike, sample: Sample, fld: str | None, problem: str) -> DataError:
    """A `DataError` for a sample read by `read_samples`, at its row of `path`."""
    return DataError(path, sample.row, fld, problem)


def _parse_rows(path: Path, text: str) -> list[tuple[str, object]]:
    """(row label, parsed object) pairs. Row labels are '0-based index' for arrays, 'line N' for JSONL."""
    stripped = text.lstrip()
    if not stripped:
        raise DataError(path, None, None, "the file is empty")
    if stripped[0] == "[":
        try:
            data = parse_json(text)
        except json.JSONDecodeError as e:
            raise DataError(path, None, None, f"not valid JSON ({e})") from None
        except ValueError as e:
            raise DataError(path, None, None, str(e)) from None
        return [(str(i), obj) for i, obj in enumerate(data)]
    if stripped[0] != "{":
        raise DataError(path, None, None, "not a JSON array nor JSON Lines of objects")
    return [(f"line {n}", obj) for n, obj in read_jsonl(path, text=text)]


def _known_titles(rows: list[tuple[str, object]]) -> set[str]:
    """Titles seen as whole strings in the file's lists; used to split `::`-joined histories unambiguously.
    (A target is among its row's candidates in every valid file, so it adds no title.)"""
    known: set[str] = set()
    for _, obj in rows:
        if isinstance(obj, dict):
            for key in ("itemList", "historyList"):
                if isinstance(obj.get(key), list):
                    known.update(t for t in obj[key] if isinstance(t, str))
    return known


def split_history(joined: str, known: set[str]) -> list[str]:
    """Split a `::`-joined history. A title may itself start or end with ':' (`:wumpscut:`), so when the
    plain split yields unknown titles we look for a split at `::` boundaries whose pieces are all known."""
    plain = joined.split(SEP)
    if all(p in known for p in plain) or not known:
        return plain
    n = len(joined)
    # A '::' ending the string would start an empty title: it is no cut (an empty title is refused later).
    cuts = [i for i in range(n - 2) if joined.startswith(SEP, i)]
    # seg[start] = titles that exactly cover joined[:start], where a next title may begin.
    seg: dict[int, list[str]] = {0: []}
    for end in cuts + [n]:
        for start in sorted(seg):
            if start < end and joined[start:end] in known:
                seg.setdefault(end + 2 if end < n else n, seg[start] + [joined[start:end]])
    return seg.get(n, plain)


def _to_sample(path: Path, row: str, obj: object, known: set[str], key: str) -> Sample:
    if not isinstance(obj, dict):
        raise DataError(path, row, None, f"expected a JSON object, got {type(obj).__name__}")
    for name in ("historyList", "itemList", "trueSelection"):
        if name not in obj:
            raise DataError(path, row, name, "missing field")
    hist = obj["historyList"]
    if isinstance(hist, str):
        hist = split_history(hist, known) if hist else []
    if not isinstance(hist, list):
        raise DataError(path, row, "historyList", f"expected a list or a '::'-joined string, got {type(hist).__name__}")
    cands, target, user = obj["itemList"], obj["trueSelection"], obj.get("user")
    if not isinstance(cands, list):
        raise DataError(path, row, "itemList", f"expected a list of titles, got {type(cands).__name__}")
    if not isinstance(target, str):
        raise DataError(path, row, "trueSelection", f"expected a title string, got {type(target).__name__}")
    if user is not None and not isinstance(user, (str, int)):
        raise DataError(path, row, "user", f"expected a string or integer, got {type(user).__name__}")
    for name, titles in (("historyList", hist), ("itemList", cands), ("trueSelection", [target])):
        for j, t in enumerate(titles):
            if not isinstance(t, str):
                raise DataError(path, row, name, f"item {j} is {type(t).__name__}, expected a title string")
            if not t.strip():
                raise DataError(path, row, name, f"item {j} is an empty title")
            if SEP in t:
                raise DataError(path, row, name, f"title {t!r} contains '::'")
    if not hist:
        raise DataError(path, row, "historyList", "empty history")
    if len(cands) < 2:
        raise DataError(path, row, "itemList", f"needs at least 2 candidates, got {len(cands)}")
    if len(set(cands)) != len(cands):
        dup = next(t for t in cands if cands.count(t) > 1)
        raise DataError(path, row, "itemList", f"duplicate candidate {dup!r}")
    if target not in cands:
        raise DataError(path, row, "trueSelection", f"target {target!r} is not among the candidates")
    return Sample(list(hist), list(cands), target, None if user is None else str(user), key, row)


def validate_samples(samples: list[Sample], where: str) -> None:
    """Checks for samples built in memory (importers, generators) before they are written."""
    for i, s in enumerate(samples):
        _to_sample(Path(where), str(i), {**s.to_json()}, set(), s.key)
