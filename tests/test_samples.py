import hashlib
import json

import pytest

from sdporec.data.samples import Sample, read_samples, split_history, validate_samples, write_samples
from sdporec.errors import DataError

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


@pytest.mark.parametrize(
    "row, field, problem",
    [
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
    ],
)
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


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("[1, 2", "not valid JSON"),
        ("42", "not a JSON array"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_whole_file_errors(tmp_path, text, problem):
    p = write(tmp_path, text)
    with pytest.raises(DataError, match=problem):
        read_samples(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_samples(tmp_path / "nope.json")


def test_titles_with_unicode_line_marks_round_trip(tmp_path):
    # str.splitlines splits at U+0085 and U+2028, which JSON Lines written with ensure_ascii=False keep raw.
    from sdporec.files import text_lines

    s = Sample(["A\x85B", "C\u2028D"], ["E\u2029F", "G\x1cH", "I\x0bJ"], "E\u2029F")
    write_samples(tmp_path / "s.jsonl", [s, s])
    assert read_samples(tmp_path / "s.jsonl") == [s, s]
    assert text_lines("a\r\nb\x85c\n\nd") == ["a", "b\x85c", "", "d"]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({k: v for k, v in GOOD.items() if k != "itemList"}, "itemList", "missing field"),
        ({**GOOD, "itemList": "D::E"}, "itemList", "expected a list of titles, got str"),
        ({**GOOD, "historyList": 5}, "historyList", "expected a list or a '::'-joined string, got int"),
        ({**GOOD, "trueSelection": 3}, "trueSelection", "expected a title string, got int"),
        ({**GOOD, "itemList": ["D", 4, "E"]}, "itemList", "item 1 is int, expected a title string"),
        ({**GOOD, "historyList": ["A", " "]}, "historyList", "item 1 is an empty title"),
        ({**GOOD, "trueSelection": ""}, "trueSelection", "item 0 is an empty title"),
        ({**GOOD, "historyList": ["A", "B::C"]}, "historyList", "title 'B::C' contains '::'"),
        ({**GOOD, "historyList": []}, "historyList", "empty history"),
        ({**GOOD, "itemList": ["E"], "trueSelection": "E"}, "itemList", "needs at least 2 candidates, got 1"),
        ({**GOOD, "itemList": ["D", "E", "F", "E"]}, "itemList", "duplicate candidate 'E'"),
        ({**GOOD, "trueSelection": "Z"}, "trueSelection", "target 'Z' is not among the candidates"),
        ({**GOOD, "user": 2.5}, "user", "expected a string or integer, got float"),
    ],
)
def test_bad_rows_in_full(tmp_path, row, field, message):
    p = write(tmp_path, [GOOD, GOOD, row])
    with pytest.raises(DataError) as e:
        read_samples(p)
    assert str(e.value) == f"file {p}, row 2, field '{field}': {message}"
    assert (e.value.path, e.value.row, e.value.field, e.value.problem) == (str(p), "2", field, message)


def test_a_row_that_is_not_an_object(tmp_path):
    p = write(tmp_path, [GOOD, "text"])
    with pytest.raises(DataError) as e:
        read_samples(p)
    assert str(e.value) == f"file {p}, row 1: expected a JSON object, got str"


def test_two_candidates_and_a_user_number_are_fine(tmp_path):
    p = write(tmp_path, [{**GOOD, "itemList": ["D", "E"], "user": 7}])
    (s,) = read_samples(p, "valid")
    assert s.candidates == ["D", "E"] and s.user == "7" and s.key == "valid:0" and s.row == "0"


def test_whole_file_errors_in_full(tmp_path):
    cases = {
        "   \n": "the file is empty",
        "42": "not a JSON array nor JSON Lines of objects",
        "[1, 2": "not valid JSON (Expecting ',' delimiter: line 1 column 6 (char 5))",
    }
    for text, message in cases.items():
        p = write(tmp_path, text)
        with pytest.raises(DataError) as e:
            read_samples(p)
        assert str(e.value) == f"file {p}: {message}"
    p = write(tmp_path, json.dumps(GOOD) + "\n\n{oops\n", "e.jsonl")
    with pytest.raises(DataError) as e:
        read_samples(p)
    assert str(e.value) == (
        f"file {p}, row line 3: not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))"
    )
    with pytest.raises(DataError) as e:
        read_samples(tmp_path)
    assert str(e.value) == f"file {tmp_path}: no such file"


def test_jsonl_rows_are_named_by_line_and_keyed_by_position(tmp_path):
    p = write(tmp_path, "\n" + json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "user": "u"}) + "\n", "x.jsonl")
    s = read_samples(p)
    assert [x.row for x in s] == ["line 2", "line 4"] and [x.key for x in s] == ["x:0", "x:1"]


def test_content_key_is_stable_across_versions():
    # Files written by earlier versions pair with new ones only if the key never changes: a fixed value.
    s = Sample(["Bj\u00f6rk", "A"], ["B", "C"], "C", user="u", key="x:1", row="3")
    assert s.content_key() == "7b76bbf5e92831befece"
    # The documented definition: sha256 of the JSON of [history, candidates, target], UTF-8, first 20 hex digits.
    text = '[["Björk", "A"], ["B", "C"], "C"]'
    assert s.content_key() == hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def test_to_json_writes_the_paper_fields_and_the_user_only_when_known():
    s = Sample(["A"], ["B", "C"], "B")
    assert s.to_json() == {"historyList": ["A"], "itemList": ["B", "C"], "trueSelection": "B"}
    assert Sample(["A"], ["B", "C"], "B", user="9").to_json()["user"] == "9"


def test_split_history_without_known_titles_or_a_cover():
    assert split_history("A::B", set()) == ["A", "B"]
    assert split_history("A::B::C", {"A::B"}) == ["A", "B", "C"]  # no cover by known titles: the plain split
    assert split_history("X:::Y", {"X:", "Y", "X"}) == ["X:", "Y"]
    assert split_history("A", {"B"}) == ["A"]


def test_a_trailing_separator_is_an_empty_title_never_dropped():
    # "a:::" is "a" + "::" + ":", or "a:" + "::" + "" (an empty title): never "a:" alone.
    assert split_history("a:::", {"a", ":", "a:"}) == ["a", ":"]
    assert split_history("X::", {"X"}) == ["X", ""]


def test_a_joined_history_ending_in_the_separator_is_refused(tmp_path):
    p = write(tmp_path, [GOOD, {**GOOD, "historyList": "A::"}])
    with pytest.raises(DataError) as e:
        read_samples(p)
    assert str(e.value) == f"file {p}, row 1, field 'historyList': item 1 is an empty title"


def test_validate_samples_names_where_and_the_index():
    with pytest.raises(DataError) as e:
        validate_samples([Sample(["A"], ["B", "C"], "B"), Sample(["A"], ["B", "C"], "Z")], "importer")
    assert str(e.value) == "file importer, row 1, field 'trueSelection': target 'Z' is not among the candidates"
    validate_samples([Sample(["A"], ["B", "C"], "B")], "importer")


@pytest.mark.parametrize("where", ["itemList", "historyList"])
def test_a_joined_history_is_split_by_titles_seen_anywhere_in_the_file(tmp_path, where):
    # ':wumpscut:' is known only from one list field of another row; the joined history splits by it. (A target
    # is always among its row's candidates, so `trueSelection` adds no title of its own to a valid file.)
    other = {"historyList": ["A"], "itemList": ["B", "C"], "trueSelection": "B"}
    other = {**other, where: other[where] + [":wumpscut:"]}
    joined = {"historyList": ":wumpscut:::Boris", "itemList": ["D", "E"], "trueSelection": "D"}
    p = write(tmp_path, [other, joined, {**GOOD, "historyList": ["Boris"]}])
    assert read_samples(p)[1].history == [":wumpscut:", "Boris"]  # a plain split gives ":wumpscut", ":Boris"
