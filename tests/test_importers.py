import json
import zipfile

import pytest
from conftest import shared_file

from sdporec.cli import main
from sdporec.data.importers import (
    ML100K_SHA256,
    distinct_titles,
    download_movielens_100k,
    integer_ids,
    k_core,
    read_interaction_log,
    read_movielens_100k,
)
from sdporec.data.samples import read_samples
from sdporec.errors import DataError
from sdporec.runs import PREPARE_SUMMARY


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def log_files(tmp_path):
    items = write(
        tmp_path / "items.csv", "item,title\n" + "".join(f"{i},Film {i}\n" for i in range(1, 41)) + "41,Film 1\n"
    )
    rows = ["user,item,timestamp,rating"]
    for u in range(12):
        for t in range(8):
            rows.append(f"u{u},{(u * 3 + t * 5) % 41 + 1},{100 + t},{1 + (t % 5)}")
    inter = write(tmp_path / "inter.csv", "\n".join(rows) + "\n")
    return inter, items


def test_interaction_log_in_time_order_with_distinct_titles(log_files):
    inter, items = log_files
    data = read_interaction_log(inter, items)
    assert len(data.sequences) == 12 and all(len(s) == 8 for s in data.sequences.values())
    assert data.sequences["u0"][:3] == ["Film 1", "Film 6", "Film 11"]
    assert data.renamed == {"Film 1 [item 41]": "Film 1"}
    rated = read_interaction_log(inter, items, rating_col="rating", min_rating=3)
    assert all(len(s) < 8 for s in rated.sequences.values())


@pytest.mark.parametrize(
    "bad, field, line",
    [
        ("user,item,timestamp\nu1,999,5\n", "item", "line 2"),
        ("user,item,timestamp\nu1,1,soon\n", "timestamp", "line 2"),
        ("user,item,timestamp\n,1,5\n", "user", "line 2"),
        ("user,item\nu1,1\n", "timestamp", None),
    ],
)
def test_interaction_log_errors_name_file_row_field(log_files, tmp_path, bad, field, line):
    _, items = log_files
    inter = write(tmp_path / "bad.csv", bad)
    with pytest.raises(DataError) as e:
        read_interaction_log(inter, items)
    assert e.value.field == field and e.value.row == line and str(inter) in str(e.value)


def test_items_file_errors(tmp_path):
    inter = write(tmp_path / "i.csv", "user,item,timestamp\n")
    with pytest.raises(DataError, match="row line 3, field 'title': empty title"):
        read_interaction_log(inter, write(tmp_path / "t.csv", "item,title\n1,A\n2,\n"))
    with pytest.raises(DataError, match="contains '::'"):
        read_interaction_log(inter, write(tmp_path / "t.csv", "item,title\n1,A::B\n"))


def test_k_core_is_repeated_until_stable():
    seqs = {"a": ["x", "y", "z"], "b": ["x", "y"], "c": ["x", "w"]}
    core = k_core(seqs, 2)
    assert "w" not in str(core) and "z" not in str(core)
    counts = {}
    for s in core.values():
        for t in s:
            counts[t] = counts.get(t, 0) + 1
    assert all(v >= 2 for v in counts.values()) and all(len(s) >= 2 for s in core.values())


def test_distinct_titles():
    names, renamed = distinct_titles({1: "A", 2: "B", 3: "A"})
    assert names == {1: "A", 2: "B", 3: "A [item 3]"} and renamed == {"A [item 3]": "A"}


def mixed_log(tmp_path, ids):
    """Items named 'Title <id>', and users whose every interaction is known: user u sees ids[u % n], ... in order."""
    items = write(tmp_path / "items.csv", "item,title\n" + "".join(f"{i},Title {i}\n" for i in ids))
    rows, seen = ["user,item,timestamp"], {}
    for u in range(60):
        seq = [ids[(u * 7 + t * 3) % len(ids)] for t in range(6)]
        seen[f"u{u}"] = [f"Title {i}" for i in seq]
        rows += [f"u{u},{item},{100 + t}" for t, item in enumerate(seq)]
    return write(tmp_path / "inter.csv", "\n".join(rows) + "\n"), items, seen


def test_mixed_item_ids_keep_every_item_its_own_title(tmp_path):
    ids = [str(i) for i in range(1, 31)] + list("abcdefghij")
    inter, items, seen = mixed_log(tmp_path, ids)
    data = read_interaction_log(inter, items)
    assert data.sequences == seen
    assert len(set(data.item_ids.values())) == len(data.item_ids) == 40
    out = tmp_path / "out"
    assert main(["prepare", "csv", "--interactions", str(inter), "--items-file", str(items), "--out", str(out)]) == 0
    assert sorted((out / "items.txt").read_text().splitlines()) == sorted(f"Title {i}" for i in ids)


def test_ids_spelled_apart_are_items_apart(tmp_path):
    ids = ["7", "007", "07", "a", "A", "é", "٣", "3"]  # leading zeros, case, non-ASCII letters and digits
    inter, items, seen = mixed_log(tmp_path, ids)
    data = read_interaction_log(inter, items)
    assert data.sequences == seen and len(set(data.item_ids.values())) == len(ids)
    # Shared titles are marked with the id as the file spells it.
    items = write(tmp_path / "items.csv", "item,title\n7,Same\n007,Same\n")
    inter = write(tmp_path / "inter.csv", "user,item,timestamp\nu,7,1\nu,007,2\n")
    assert read_interaction_log(inter, items).sequences == {"u": ["Same", "Same [item 007]"]}


def test_integer_ids():
    assert integer_ids(["10", "2", "0"]) == {"10": 10, "2": 2, "0": 0}  # plain integers keep their value
    assert integer_ids(["10", "2", "02"]) == {"2": 0, "02": 1, "10": 2}  # else (length, text) order
    assert integer_ids(["b", "a", "3"]) == {"3": 0, "a": 1, "b": 2}


def test_prepare_csv_leave_last_out(log_files, tmp_path):
    inter, items = log_files
    out = tmp_path / "out"
    assert (
        main(
            [
                "prepare",
                "csv",
                "--interactions",
                str(inter),
                "--items-file",
                str(items),
                "--out",
                str(out),
                "--split",
                "leave-last-out",
                "--candidates",
                "10",
            ]
        )
        == 0
    )
    train, valid, test = (read_samples(out / f"{n}.jsonl") for n in ("train", "valid", "test"))
    assert len(valid) == len(test) == 12 and len(train) == 12 * 3
    assert all(len(s.candidates) == 10 and s.target in s.candidates for s in train + valid + test)
    summary = json.loads((out / PREPARE_SUMMARY).read_text())
    assert summary["samples"] == {"train": 36, "valid": 12, "test": 12}


def test_movielens_100k_counts():
    raw = shared_file("ml-100k", "u.data").parent
    data = read_movielens_100k(raw)
    assert len(data.sequences) == 943 and sum(map(len, data.sequences.values())) == 100000
    assert len(data.item_ids) == 1682 and len(data.renamed) == 18


def test_prepare_movielens_100k_and_audit(tmp_path, capsys):
    raw = shared_file("ml-100k", "u.data").parent
    out = tmp_path / "ml"
    assert main(["prepare", "movielens-100k", "--raw", str(raw), "--out", str(out)]) == 0
    summary = json.loads((out / PREPARE_SUMMARY).read_text())
    assert sum(summary["samples"].values()) == 97171
    assert sum(summary["users"].values()) == 943
    capsys.readouterr()
    assert (
        main(
            [
                "audit",
                str(out / "test.jsonl"),
                "--train",
                str(out / "train.jsonl"),
                "--out",
                str(tmp_path / "audit.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["passed"] and result["leak_hr@1"] < 0.01


def test_download_checks_sha256(tmp_path, monkeypatch):
    raw = shared_file("ml-100k", "u.data").parent
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ML100K_SHA256:
            z.write(raw / name, f"ml-100k/{name}")
    dest = download_movielens_100k(tmp_path / "got", url=archive.as_uri())
    assert (dest / "u.data").read_bytes() == (raw / "u.data").read_bytes()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
        z.write(raw / "u.item", "ml-100k/u.item")
    with pytest.raises(DataError, match="SHA-256"):
        download_movielens_100k(tmp_path / "bad", url=bad.as_uri())
    assert not (tmp_path / "bad" / "u.item").exists()


def _grouplens_zip(raw, path):
    """An archive laid out as GroupLens's ml-100k.zip: a folder ml-100k/ with the files inside."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("u.data", "u.item", "README"):
            if (raw / name).is_file():
                z.write(raw / name, f"ml-100k/{name}")
    return path


def test_prepare_downloads_from_a_file_url_and_refuses_a_corrupted_archive(tmp_path, capsys):
    raw = shared_file("ml-100k", "u.data").parent
    archive = _grouplens_zip(raw, tmp_path / "ml-100k.zip")
    assert (
        main(
            [
                "prepare",
                "movielens-100k",
                "--download",
                "--url",
                archive.as_uri(),
                "--raw",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "ml"),
            ]
        )
        == 0
    )
    assert (tmp_path / "raw" / "u.item").read_bytes() == (raw / "u.item").read_bytes()
    assert json.loads((tmp_path / "ml" / PREPARE_SUMMARY).read_text())["items"] == 1682
    (tmp_path / "truncated.zip").write_bytes(archive.read_bytes()[:40000])
    capsys.readouterr()
    code = main(
        [
            "prepare",
            "movielens-100k",
            "--download",
            "--url",
            (tmp_path / "truncated.zip").as_uri(),
            "--raw",
            str(tmp_path / "raw-t"),
            "--out",
            str(tmp_path / "ml-t"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "truncated.zip: is not a readable zip archive" in err, err
    assert not (tmp_path / "raw-t").exists() and not (tmp_path / "ml-t").exists()


def _damaged(archive, tmp_path, failure):
    """The first single-bit flip of the archive's compressed data whose read fails with `failure`."""
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("ml-100k/u.data")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = archive.read_bytes()
    for bit in range(start * 8, (start + info.compress_size) * 8, 7):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path = tmp_path / f"{failure.__name__}.zip"
        path.write_bytes(bytes(flipped))
        try:
            with zipfile.ZipFile(path) as z:
                z.read("ml-100k/u.data")
        except failure:
            return path
        except Exception:
            continue
    raise AssertionError(f"no flip gives {failure.__name__}")


@pytest.mark.parametrize("failure", ["zlib", "crc", "truncated", "not a zip", "empty"])
def test_every_archive_read_failure_is_one_data_error(tmp_path, failure):
    import zlib

    raw = tmp_path / "src"
    raw.mkdir()
    (raw / "u.data").write_text("".join(f"{u}\t{i}\t3\t{u * i}\n" for u in range(1, 80) for i in range(1, 40)))
    (raw / "u.item").write_text("".join(f"{i}|Film {i} (1999)|\n" for i in range(1, 40)))
    archive = _grouplens_zip(raw, tmp_path / "ml-100k.zip")
    if failure == "zlib":
        bad = _damaged(archive, tmp_path, zlib.error)
    elif failure == "crc":
        bad = _damaged(archive, tmp_path, zipfile.BadZipFile)
    else:
        bad = tmp_path / "bad.zip"
        bad.write_bytes(
            {"truncated": archive.read_bytes()[:600], "not a zip": b"<html>not found</html>", "empty": b""}[failure]
        )
    with pytest.raises(DataError) as e:
        download_movielens_100k(tmp_path / "raw", url=bad.as_uri())
    assert str(e.value).startswith(f"file {bad.as_uri()}: is not a readable zip archive (")
    assert "\n" not in str(e.value) and not (tmp_path / "raw").exists()


def test_latin1_titles_decode(tmp_path):
    # u.item is Latin-1: 'Misérables' is the byte 0xe9, which is not UTF-8.
    (tmp_path / "u.item").write_bytes(
        "1|Mis\xe9rables, Les (1995)|01-Jan-1995||url|0\n2|Se7en (1995)|x||u|0\n".encode("latin-1")
    )
    (tmp_path / "u.data").write_text("1\t1\t5\t100\n1\t2\t4\t101\n")
    data = read_movielens_100k(tmp_path)
    assert data.sequences["1"] == ["Misérables, Les (1995)", "Se7en (1995)"]


def test_real_u_item_has_its_accented_titles():
    raw = shared_file("ml-100k", "u.item").parent
    titles = set(read_movielens_100k(raw).item_ids)
    assert "Misérables, Les (1995)" in titles and not any("\ufffd" in t for t in titles)
