import json
import zipfile

import pytest
from conftest import shared_file

from sdporec.cli import main
from sdporec.data.importers import (
    ML100K_SHA256,
    distinct_titles,
    download_movielens_100k,
    k_core,
    read_interaction_log,
    read_movielens_100k,
)
from sdporec.data.samples import DataError, read_samples


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


@pytest.mark.parametrize("bad, field, line", [
    ("user,item,timestamp\nu1,999,5\n", "item", "line 2"),
    ("user,item,timestamp\nu1,1,soon\n", "timestamp", "line 2"),
    ("user,item,timestamp\n,1,5\n", "user", "line 2"),
    ("user,item\nu1,1\n", "timestamp", None),
])
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


def test_prepare_csv_leave_last_out(log_files, tmp_path):
    inter, items = log_files
    out = tmp_path / "out"
    assert main(["prepare", "csv", "--interactions", str(inter), "--items-file", str(items), "--out", str(out),
                 "--split", "leave-last-out", "--candidates", "10"]) == 0
    train, valid, test = (read_samples(out / f"{n}.jsonl") for n in ("train", "valid", "test"))
    assert len(valid) == len(test) == 12 and len(train) == 12 * 3
    assert all(len(s.candidates) == 10 and s.target in s.candidates for s in train + valid + test)
    summary = json.loads((out / "prepare.json").read_text())
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
    summary = json.loads((out / "prepare.json").read_text())
    assert sum(summary["samples"].values()) == 97171
    assert sum(summary["users"].values()) == 943
    capsys.readouterr()
    assert main(["audit", str(out / "test.jsonl"), "--train", str(out / "train.jsonl"),
                 "--out", str(tmp_path / "audit.json")]) == 0
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
    assert main(["prepare", "movielens-100k", "--download", "--url", archive.as_uri(), "--raw", str(tmp_path / "raw"),
                 "--out", str(tmp_path / "ml")]) == 0
    assert (tmp_path / "raw" / "u.item").read_bytes() == (raw / "u.item").read_bytes()
    assert json.loads((tmp_path / "ml" / "prepare.json").read_text())["items"] == 1682
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF                      # one flipped byte inside u.data's compressed stream
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    (tmp_path / "truncated.zip").write_bytes(archive.read_bytes()[:40000])
    capsys.readouterr()
    for bad in ("bad.zip", "truncated.zip"):
        code = main(["prepare", "movielens-100k", "--download", "--url", (tmp_path / bad).as_uri(),
                     "--raw", str(tmp_path / f"raw-{bad}"), "--out", str(tmp_path / f"ml-{bad}")])
        err = capsys.readouterr().err
        assert code == 2 and bad in err and ("CRC" in err or "SHA-256" in err or "zip" in err), err
        assert not list((tmp_path / f"raw-{bad}").glob("u.*")) and not (tmp_path / f"ml-{bad}").exists()


def test_latin1_titles_decode(tmp_path):
    # u.item is Latin-1: 'Misérables' is the byte 0xe9, which is not UTF-8.
    (tmp_path / "u.item").write_bytes("1|Mis\xe9rables, Les (1995)|01-Jan-1995||url|0\n2|Se7en (1995)|x||u|0\n"
                                      .encode("latin-1"))
    (tmp_path / "u.data").write_text("1\t1\t5\t100\n1\t2\t4\t101\n")
    data = read_movielens_100k(tmp_path)
    assert data.sequences["1"] == ["Misérables, Les (1995)", "Se7en (1995)"]


def test_real_u_item_has_its_accented_titles():
    raw = shared_file("ml-100k", "u.item").parent
    titles = set(read_movielens_100k(raw).item_ids)
    assert "Misérables, Les (1995)" in titles and not any("\ufffd" in t for t in titles)
