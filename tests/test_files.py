"""Reading users' text files and writing files and directories whole (sdporec/files.py), by hand."""

import os
from pathlib import Path

import pytest

from sdporec.errors import DataError, OutputError
from sdporec.files import (
    atomic_path,
    atomic_write_text,
    output_set,
    read_json_object,
    read_jsonl,
    read_text,
    swap_in_dir,
    text_lines,
    write_jsonl,
)


@pytest.mark.parametrize(
    "data,line,column,byte",
    [
        (b"ab\ncd\xe9\nef\n", 2, 3, "e9"),  # newlines after the bad byte do not count
        (b"\nab\xe9", 2, 3, "e9"),  # a newline at the very start does
        (b"\xff", 1, 1, "ff"),
        (b"ok\n\n\x80x\n", 3, 1, "80"),
    ],
)
def test_the_first_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path, data, line, column, byte):
    p = tmp_path / "t.txt"
    p.write_bytes(data)
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == (
        f"file {p}, row line {line}: not UTF-8 text (byte 0x{byte} at column {column}); save the file as UTF-8"
    )


@pytest.mark.parametrize("text,line", [("a\nb\x00c\nd\n", 2), ("\x00\n\n", 1), ("\na\nb\x00\nc\x00", 3)])
def test_a_nul_is_named_by_its_first_line(tmp_path, text, line):
    p = tmp_path / "t.txt"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}, row line {line}: holds a NUL character: a binary file, not text"


def test_an_unreadable_file_says_why(tmp_path, monkeypatch):
    p = tmp_path / "t.txt"
    p.write_text("x")

    def refuse(error):
        def read_bytes(self):
            raise error

        return read_bytes

    monkeypatch.setattr(Path, "read_bytes", refuse(PermissionError(13, "Permission denied")))
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}: cannot be read (Permission denied)"
    monkeypatch.setattr(Path, "read_bytes", refuse(OSError("disk gone")))
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}: cannot be read (disk gone)"


def test_json_lines_keep_non_ascii_as_written(tmp_path):
    write_jsonl(tmp_path / "r.jsonl", [{"t": "Bj\u00f6rk"}, {"t": "\u2028"}])
    assert (tmp_path / "r.jsonl").read_bytes() == '{"t": "Bj\u00f6rk"}\n{"t": "\u2028"}\n'.encode("utf-8")


def test_atomic_path_renames_on_success_and_removes_on_failure(tmp_path):
    target = tmp_path / "new" / "f.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        tmp.write_bytes(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(target.parent) == ["f.bin"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(target.parent) == ["f.bin"]


def test_atomic_write_text_is_utf8(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "\u00e9\u4e2d")
    assert (tmp_path / "t.txt").read_bytes() == "\u00e9\u4e2d".encode("utf-8")


def test_swap_in_dir_replaces_the_directory_whole(tmp_path):
    out, tmp = tmp_path / "model", tmp_path / "model.tmp"
    out.mkdir()
    (out / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    swap_in_dir(tmp, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .tmp, no .old left
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    tmp.mkdir()
    (tmp / "third.txt").write_text("3")
    (tmp_path / "model.old").mkdir()  # a leftover of a killed swap
    (tmp_path / "model.old" / "stale").write_text("x")
    swap_in_dir(tmp, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and [p.name for p in out.iterdir()] == ["third.txt"]


def test_swap_in_dir_into_a_new_place(tmp_path):
    tmp = tmp_path / "a.tmp"
    tmp.mkdir()
    (tmp / "x").write_text("1")
    swap_in_dir(tmp, tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and (tmp_path / "a" / "x").read_text() == "1"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    atomic_write_text(p, "old\n")

    def rows():
        yield {"ok": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(p, rows())
    assert p.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]


def test_read_text_encodings_and_their_errors(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffh\u00e9".encode("utf-8"))
    assert read_text(p) == "h\u00e9"
    p.write_bytes("h\u00e9".encode("utf-16-be").join([b"\xfe\xff", b""]))
    assert read_text(p) == "h\u00e9"
    p.write_bytes("ok".encode("utf-16-le").join([b"\xff\xfe", b""]))
    assert read_text(p) == "ok"
    p.write_bytes(b"\xff\xfea")  # a UTF-16 mark, then an odd byte
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}: starts like UTF-16 text but byte 2 is not"
    p.write_bytes(b"ab\ncd\nef\xe9gh")
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}, row line 3: not UTF-8 text (byte 0xe9 at column 3); save the file as UTF-8"
    p.write_bytes(b"\xe9")
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}, row line 1: not UTF-8 text (byte 0xe9 at column 1); save the file as UTF-8"
    p.write_bytes(b"a\nb\nc\x00d")
    with pytest.raises(DataError) as e:
        read_text(p)
    assert str(e.value) == f"file {p}, row line 3: holds a NUL character: a binary file, not text"
    for path, message in ((tmp_path, "is a directory, not a file"), (tmp_path / "none", "no such file")):
        with pytest.raises(DataError) as e:
            read_text(path)
        assert str(e.value) == f"file {path}: {message}"


def test_read_json_object_and_its_errors(tmp_path):
    p = tmp_path / "o.json"
    p.write_text('{"a": 1}')
    assert read_json_object(p) == {"a": 1}
    for text, message in (
        ("[1]", "expected a JSON object"),
        ("{", "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ):
        p.write_text(text)
        for context, tail in (("", ""), ("the checkpoint is damaged", "; the checkpoint is damaged")):
            with pytest.raises(DataError) as e:
                read_json_object(p, context) if context else read_json_object(p)  # the default: no tail
            assert str(e.value) == f"file {p}: {message}{tail}"


def test_written_files_get_the_permissions_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "sub" / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "f.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "sub" / "f.txt").read_text() == "x" and os.umask(old) == old


def test_text_lines_by_hand():

    assert text_lines("") == [] and text_lines("\n") == [""] and text_lines("a") == ["a"]
    assert text_lines("a\r\n\r\nb\r") == ["a", "", "b"] and text_lines("a\rb\n") == ["a\rb"]


def test_files_are_written_as_utf8_whatever_the_locale(tmp_path):
    # A server in the C locale (no UTF-8 coercion, no UTF-8 mode) still writes titles as UTF-8 JSON Lines.
    import subprocess
    import sys

    import sdporec

    out = tmp_path / "o.jsonl"
    env = {
        **os.environ,
        "LC_ALL": "C",
        "LANG": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONPATH": str(Path(sdporec.__file__).parents[1]),
    }
    code = f"from sdporec.files import write_jsonl; write_jsonl({str(out)!r}, [{{'t': 'Sigur R\\u00f3s'}}])"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == '{"t": "Sigur Rós"}\n'.encode()  # UTF-8
    write_jsonl(tmp_path / "here.jsonl", [{"t": "Sigur Rós"}])  # and the same bytes in this process's locale
    assert (tmp_path / "here.jsonl").read_bytes() == out.read_bytes()


def test_an_output_set_replaces_all_its_files_or_none(tmp_path):
    for name, text in (("a.txt", "old a"), ("config.yaml", "old config"), ("mine.txt", "not ours")):
        (tmp_path / name).write_text(text)
    with pytest.raises(RuntimeError), output_set(tmp_path, "config.yaml") as stage:
        (stage / "a.txt").write_text("new a")
        raise RuntimeError("half-way")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.txt": "old a",
        "config.yaml": "old config",
        "mine.txt": "not ours",
    }
    order = []
    real_replace = os.replace

    def replace(src, dst):
        order.append(Path(dst).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "replace", replace)
        with output_set(tmp_path, "config.yaml") as stage:
            for name in ("config.yaml", "a.txt", "b.txt"):
                (stage / name).write_text(f"new {name}")
    assert order == ["a.txt", "b.txt", "config.yaml"]  # the record last
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.txt": "new a.txt",
        "b.txt": "new b.txt",
        "config.yaml": "new config.yaml",
        "mine.txt": "not ours",
    }


def test_an_output_set_whose_write_fails_is_one_error_naming_the_folder(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    with (
        pytest.raises(OutputError, match=f"cannot write {tmp_path}: No space left"),
        output_set(tmp_path, "metrics.json") as stage,
    ):
        (stage / "metrics.json").write_text("new")
        raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and (tmp_path / "metrics.json").read_text() == "old"


def test_json_lines_a_cut_last_line_is_left_out_and_nan_refused(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b')
    assert read_jsonl(path) == [(1, {"a": 1}), (3, {"a": 2})]
    assert "line 4 is cut short" in capsys.readouterr().err
    path.write_text('{"a": 1}\n{"a": 3, "b\n{"a": 2}\n')  # cut, but not last: an error
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(DataError, match="line 2.*NaN"):
        read_jsonl(path)
    assert read_jsonl(path, finite=False)[1][1]["a"] != 1  # NaN, read where allowed
