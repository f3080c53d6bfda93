import json

import pytest

from sdporec.data.samples import DataError, Sample, atomic_write_text, read_samples, split_history, write_samples

GOOD = {"historyList": ["A", "B", "C"], "itemList": ["D", "E", "F"], "trueSelection": "E"}


def write(tmp_path, obj, name="d.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_reads_paper_json_with_joined_history(tmp_path):
    p = write(tmp_path, [{**GOOD, "historyList": "A::B::C"}, GOOD])
    s = read_samples(p)
    assert s[0].history == ["A", "B", "C"] and s[1].history == ["A", "B", "C"]
    assert s[0].candidates == ["D", "E", "F"] and s[0].target == "E"
    assert s[0].key == "d:0" and s[1].key == "d:1"


def test_jsonl_round_trip(tmp_path):
    samples = [Sample(["A", "B"], ["C", "D"], "D", "u1", "x:0"), Sample(["B"], ["A", "C"], "A", None, "x:1")]
    write_samples(tmp_path / "s.jsonl", samples)
    back = read_samples(tmp_path / "s.jsonl")
    assert back == samples and back[0].user == "u1"


def test_split_history_handles_titles_with_colons():
    known = {"Boris", ":wumpscut:", "Fennesz"}
    assert split_history("Boris:::wumpscut:::Fennesz", known) == ["Boris", ":wumpscut:", "Fennesz"]
    assert split_history(":wumpscut:::Boris", known) == [":wumpscut:", "Boris"]
    assert split_history("X::Y", known) == ["X", "Y"]


@pytest.mark.parametrize("row, field, problem", [
    ({k: v for k, v in GOOD.items() if k != "itemList"}, "itemList", "missing field"),
    ({k: v for k, v in GOOD.items() if k != "historyList"}, "historyList", "missing field"),
    ({k: v for k, v in GOOD.items() if k != "trueSelection"}, "trueSelection", "missing field"),
    ({**GOOD, "itemList": "D::E"}, "itemList", "expected a list"),
    ({**GOOD, "historyList": 5}, "historyList", "expected a list"),
    ({**GOOD, "trueSelection": 3}, "trueSelection", "expected a title string"),
    ({**GOOD, "itemList": ["D", 4, "E"]}, "itemList", "item 1 is int"),
    ({**GOOD, "historyList": []}, "historyList", "empty history"),
    ({**GOOD, "historyList": ""}, "historyList", "empty history"),
    ({**GOOD, "itemList": ["E"]}, "itemList", "at least 2 candidates"),
    ({**GOOD, "itemList": ["D", "E", "D"]}, "itemList", "duplicate candidate 'D'"),
    ({**GOOD, "trueSelection": "Z"}, "trueSelection", "not among the candidates"),
    ({**GOOD, "historyList": ["A", " "]}, "historyList", "empty title"),
    ({**GOOD, "itemList": ["D::X", "E"]}, "itemList", "contains '::'"),
    ({**GOOD, "user": [1]}, "user", "expected a string or integer"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, row, field, problem):
    p = write(tmp_path, [GOOD, row])
    with pytest.raises(DataError) as e:
        read_samples(p)
    msg = str(e.value)
    assert str(p) in msg and "row 1" in msg and f"field '{field}'" in msg and problem in msg
    assert e.value.row == "1" and e.value.field == field


def test_jsonl_errors_name_the_line(tmp_path):
    p = write(tmp_path, json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "trueSelection": "Z"}) + "\n", "d.jsonl")
    with pytest.raises(DataError, match=r"row line 3, field 'trueSelection'"):
        read_samples(p)
    p = write(tmp_path, json.dumps(GOOD) + "\n{oops\n", "e.jsonl")
    with pytest.raises(DataError, match=r"row line 2: not valid JSON"):
        read_samples(p)


@pytest.mark.parametrize("text, problem", [
    ("", "empty"), ("[1, 2", "not valid JSON"), ("42", "not a JSON array"), ("[1]", "expected a JSON object"),
])
def test_whole_file_errors(tmp_path, text, problem):
    p = write(tmp_path, text)
    with pytest.raises(DataError, match=problem):
        read_samples(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_samples(tmp_path / "nope.json")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    atomic_write_text(p, "old\n")

    def rows():
        yield {"ok": 1}
        raise RuntimeError("boom")

    from sdporec.data.samples import write_jsonl
    with pytest.raises(RuntimeError):
        write_jsonl(p, rows())
    assert p.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]


def test_titles_with_unicode_line_marks_round_trip(tmp_path):
    # str.splitlines splits at U+0085 and U+2028, which JSON Lines written with ensure_ascii=False keep raw.
    from sdporec.data.samples import text_lines

    s = Sample(["A\x85B", "C\u2028D"], ["E\u2029F", "G\x1cH", "I\x0bJ"], "E\u2029F")
    write_samples(tmp_path / "s.jsonl", [s, s])
    assert read_samples(tmp_path / "s.jsonl") == [s, s]
    assert text_lines("a\r\nb\x85c\n\nd") == ["a", "b\x85c", "", "d"]
