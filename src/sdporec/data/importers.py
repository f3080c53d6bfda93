"""Importers: MovieLens-100K and users' own interaction logs -> per-user sequences of titles.

Every importer ends in `Interactions` (user -> titles in time order, plus the item ids the paper's leaky
seeding needs); `prepare.py` turns those into samples with the shared `sequences_to_samples`.
Bad rows raise `DataError` with the file, the row (1-based line) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sdporec.data.samples import SEP
from sdporec.errors import DataError, brief
from sdporec.files import read_text

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# SHA-256 of the two files we read, as GroupLens distributes them (checked after a download).
ML100K_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
}


@dataclass
class Interactions:
    sequences: dict[str, list[str]]  # user -> titles, oldest first
    item_ids: dict[str, int]  # title -> integer item id
    renamed: dict[str, str] = field(default_factory=dict)  # distinct title -> the title as the file has it


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_movielens_100k(dest: str | Path, url: str = ML100K_URL) -> Path:
    """Fetch the GroupLens archive, extract u.data and u.item into `dest`, and check their SHA-256."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "ml-100k.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as f:
                shutil.copyfileobj(resp, f)
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
            raise DataError(
                url,
                None,
                None,
                f"cannot download it ({getattr(e, 'reason', None) or e}); put u.data "
                "and u.item in --raw yourself, or give --url a reachable copy",
            ) from None
        _extract_checked(archive, url, Path(tmp))
        dest.mkdir(parents=True, exist_ok=True)  # only once both files are read and checked
        for name in ML100K_SHA256:
            shutil.move(str(Path(tmp) / name), dest / name)
    return dest


def _extract_checked(archive: Path, url: str, folder: Path) -> None:
    """u.data and u.item from the archive into `folder`, each checked against ML100K_SHA256."""
    try:
        with zipfile.ZipFile(archive) as z:
            for name in ML100K_SHA256:
                member = next((m for m in z.namelist() if m.endswith("/" + name) or m == name), None)
                if member is None:
                    raise DataError(url, None, None, f"the archive has no {name}")
                (folder / name).write_bytes(z.read(member))
                digest = _sha256(folder / name)
                if digest != ML100K_SHA256[name]:
                    raise DataError(
                        url,
                        None,
                        None,
                        f"{name} has SHA-256 {digest}, expected {ML100K_SHA256[name]} "
                        "(GroupLens's file): the archive is damaged or not GroupLens's",
                    )
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, OSError) as e:
        # BadZipFile: no archive or a bad CRC; zlib.error: a damaged deflate stream; EOFError: truncated.
        raise DataError(
            url,
            None,
            None,
            f"is not a readable zip archive ({type(e).__name__}: {e}); a damaged or incomplete download?",
        ) from None


def read_movielens_100k(raw: str | Path) -> Interactions:
    """Every rating is an interaction; each user's in time order, ties broken by item id."""
    raw = Path(raw)
    for name in ML100K_SHA256:
        if not (raw / name).is_file():
            raise DataError(
                raw / name, None, None, "no such file (give --raw the folder with u.data and u.item, or --download)"
            )
    titles: dict[int, str] = {}
    with open(raw / "u.item", encoding="latin-1") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("|")
            if len(parts) < 2:
                raise DataError(raw / "u.item", f"line {n}", "title", "expected 'id|title|...'")
            titles[_int(parts[0], raw / "u.item", n, "item id")] = parts[1]
    events: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with open(raw / "u.data", encoding="latin-1") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split("\t")
            if len(parts) != 4:
                raise DataError(raw / "u.data", f"line {n}", None, "expected 4 tab-separated fields")
            user = parts[0].strip()
            item = _int(parts[1], raw / "u.data", n, "item id")
            if item not in titles:
                raise DataError(raw / "u.data", f"line {n}", "item id", f"item {item} is not in u.item")
            events[user].append((_int(parts[3], raw / "u.data", n, "timestamp"), item))
    names, renamed = distinct_titles(titles)
    sequences = {u: [names[i] for _, i in sorted(ev)] for u, ev in events.items()}
    return Interactions(sequences, {names[i]: i for i in titles}, renamed)


def distinct_titles(
    titles: dict[int, str], spelled: dict[int, str] | None = None
) -> tuple[dict[int, str], dict[str, str]]:
    """Titles shared by several item ids get ' [item N]' appended for every id after the first (N: the id as
    the file spells it, `spelled`, else the integer id)."""
    counts = Counter(titles.values())
    names, renamed, seen = {}, {}, set()
    for i in sorted(titles):
        t = titles[i].strip()
        if counts[titles[i]] > 1 and t in seen:
            new = f"{t} [item {spelled[i] if spelled else i}]"
            renamed[new] = t
            t = new
        seen.add(t)
        names[i] = t
    return names, renamed


def integer_ids(items: list[str]) -> dict[str, int]:
    """An integer id per item id as the file spells it, never two alike: the ids themselves when every one is
    a plain non-negative integer (no sign, no leading zero), else 0, 1, ... in (length, text) order, so `7`,
    `007` and `a` stay three items."""
    if all(i.isascii() and i.isdigit() and str(int(i)) == i for i in items):
        return {i: int(i) for i in items}
    return {item: k for k, item in enumerate(sorted(items, key=lambda x: (len(x), x)))}


def _int(text: str, path, line: int, fld: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(path, f"line {line}", fld, f"expected an integer, got {text.strip()!r}") from None


def _float(text: str, path, line: int, fld: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(path, f"line {line}", fld, f"expected a number, got {text.strip()!r}") from None


def _table(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV/TSV file; the delimiter follows the extension."""
    delim = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    header = reader.fieldnames or []
    return header, [(reader.line_num, row) for row in reader]


def read_interaction_log(
    interactions: str | Path,
    items: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    rating_col: str = "",
    min_rating: float | None = None,
    title_col: str = "title",
    delimiter: str = "",
) -> Interactions:
    """An interactions CSV/TSV (user, item, timestamp, optional rating) and an items CSV (item, title)."""
    ipath, tpath = Path(interactions), Path(items)
    header, rows = _table(tpath, delimiter)
    for col in (item_col, title_col):
        if col not in header:
            raise DataError(tpath, None, col, f"missing column (the header has {', '.join(header)})")
    titles: dict[str, str] = {}
    for n, row in rows:
        item, title = (row[item_col] or "").strip(), (row[title_col] or "").strip()
        if not item:
            raise DataError(tpath, f"line {n}", item_col, "empty item id")
        if not title:
            raise DataError(tpath, f"line {n}", title_col, "empty title")
        if SEP in title:
            raise DataError(tpath, f"line {n}", title_col, f"title {brief(title)} contains '::'")
        if "\n" in title or "\r" in title:  # quoted CSV allows them; items.txt holds one title per line
            raise DataError(
                tpath,
                f"line {n}",
                title_col,
                f"title {brief(title)} holds a line break, which the "
                "catalogue file items.txt (one title per line) cannot hold; put the title on one line",
            )
        if item in titles:
            raise DataError(tpath, f"line {n}", item_col, f"item {item!r} is listed twice")
        titles[item] = title
    header, rows = _table(ipath, delimiter)
    needed = [user_col, item_col, time_col] + ([rating_col] if rating_col else [])
    for col in needed:
        if col not in header:
            raise DataError(ipath, None, col, f"missing column (the header has {', '.join(header)})")
    events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for n, row in rows:
        user, item = (row[user_col] or "").strip(), (row[item_col] or "").strip()
        if not user:
            raise DataError(ipath, f"line {n}", user_col, "empty user id")
        if item not in titles:
            raise DataError(ipath, f"line {n}", item_col, f"item {item!r} is not in {tpath}")
        when = _float(row[time_col] or "", ipath, n, time_col)
        if rating_col and min_rating is not None and _float(row[rating_col] or "", ipath, n, rating_col) < min_rating:
            continue
        events[user].append((when, item))
    ids = integer_ids(list(titles))
    names, renamed = distinct_titles({ids[i]: titles[i] for i in titles}, {ids[i]: i for i in titles})
    sequences = {u: [names[ids[i]] for _, i in sorted(ev, key=lambda e: (e[0], ids[e[1]]))] for u, ev in events.items()}
    return Interactions(sequences, {names[ids[i]]: ids[i] for i in titles}, renamed)


def k_core(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Drop users and items with fewer than k interactions, repeatedly, until none is left."""
    seqs = {u: list(s) for u, s in sequences.items()}
    while k > 1:
        counts = Counter(t for s in seqs.values() for t in s)
        kept = {u: [t for t in s if counts[t] >= k] for u, s in seqs.items()}
        kept = {u: s for u, s in kept.items() if len(s) >= k}
        if kept == seqs:
            break
        seqs = kept
    return seqs
