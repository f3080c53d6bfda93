"""`compare` pairs evaluations by what each sample asks, never by row number, and refuses what does not pair."""

import json
import random

import pytest

from sdporec.cli import main
from sdporec.data.samples import Sample
from sdporec.evaluation.baselines import popularity_scorer
from sdporec.evaluation.compare import CompareConfig, run_compare
from sdporec.evaluation.evaluate import evaluate_ranking, write_results

TITLES = [f"Item {i}" for i in range(30)]


def samples(seed: int, n: int = 12) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        picked = rng.sample(TITLES, 8)
        out.append(Sample(picked[:3], picked[3:], picked[3 + rng.randrange(5)], key=f"eval:{i}"))
    return out


TRAIN = samples(99, 40)


def evaluated(path, data, train=TRAIN):
    metrics, rows = evaluate_ranking(popularity_scorer(train), data)
    write_results(path, metrics, rows)
    return path / "predictions.jsonl"


def test_evaluations_of_different_samples_are_refused(tmp_path, capsys):
    # Same size, same row keys eval:0..11, different questions: row numbers would pair them.
    a, b = evaluated(tmp_path / "a", samples(1)), evaluated(tmp_path / "b", samples(2))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(b) in err and "12 of 12 samples" in err and "same samples" in err
    assert "eval:0" in err   # an example, named by its row key and target


def test_one_file_in_any_row_order_pairs_with_itself(tmp_path):
    data = samples(3)
    a = evaluated(tmp_path / "a", data)
    shuffled = tmp_path / "shuffled.jsonl"
    lines = a.read_text().splitlines(True)
    random.Random(0).shuffle(lines)
    shuffled.write_text("".join(lines))
    other = evaluated(tmp_path / "other", data, samples(98, 40))   # another model on the same samples
    got = run_compare(CompareConfig(predictions=[str(a), str(shuffled), str(other)], names=["a", "s", "o"]))
    same = [d for d in got["differences"] if (d["a"], d["b"]) == ("a", "s")]
    assert same and all(d["difference"] == d["low"] == d["high"] == 0 for d in same)
    # Paired by content: reading `other` in a shuffled order leaves every a - other difference unchanged.
    lines = other.read_text().splitlines(True)
    random.Random(1).shuffle(lines)
    (tmp_path / "o2.jsonl").write_text("".join(lines))
    again = run_compare(CompareConfig(predictions=[str(a), str(tmp_path / "o2.jsonl")], names=["a", "o"]))
    assert again["differences"] == [d for d in got["differences"] if (d["a"], d["b"]) == ("a", "o")]


def test_a_repeated_row_is_refused_with_file_line_and_key(tmp_path, capsys):
    a = evaluated(tmp_path / "a", samples(4))
    lines = a.read_text().splitlines(True)
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("".join(lines + [lines[2]]))
    assert main(["compare", str(a), str(doubled)]) == 2
    err = capsys.readouterr().err
    key = json.loads(lines[2])["sample"]
    assert f"file {doubled}, row line 13, field 'sample'" in err and key in err and "repeats line 3" in err


def test_a_sample_asked_twice_is_numbered_and_pairs(tmp_path):
    data = samples(5)
    twice = [*data, Sample(list(data[0].history), list(data[0].candidates), data[0].target, key="eval:12")]
    a = evaluated(tmp_path / "a", twice)
    rows = [json.loads(x) for x in a.read_text().splitlines()]
    assert rows[12]["sample"] == rows[0]["sample"] + "#2" and "#" not in rows[0]["sample"]
    got = run_compare(CompareConfig(predictions=[str(a), str(evaluated(tmp_path / "b", twice))]))
    assert got["n"] == 13


@pytest.mark.parametrize("field", ["history", "candidates", "target"])
def test_the_content_key_changes_with_every_field(field):
    s = Sample(["Item 1", "Item 2"], ["Item 3", "Item 4"], "Item 3", key="train:0")
    changed = {"history": Sample(["Item 2", "Item 1"], s.candidates, s.target),
               "candidates": Sample(s.history, ["Item 4", "Item 3"], s.target),
               "target": Sample(s.history, s.candidates, "Item 4")}[field]
    assert changed.content_key() != s.content_key()
    assert Sample(list(s.history), list(s.candidates), s.target, key="other:7").content_key() == s.content_key()
