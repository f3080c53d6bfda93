"""Cold items (`prepare --cold-items F`: a seeded fraction of the items never in a training sample) and
`compare --by-frequency` (the comparison again within cold, rare and frequent targets)."""

import json

import pytest

from sdporec.cli import main
from sdporec.data.prepare import builtin_interactions, cold_items, make_splits
from sdporec.data.samples import Sample, read_samples, write_samples
from sdporec.evaluation.compare import FrequencyGroups, compare_predictions
from sdporec.runs import PREDICTIONS, PREPARE_SUMMARY


def _names(sample: Sample) -> set[str]:
    return {*sample.history, *sample.candidates, sample.target}


@pytest.mark.parametrize("split", ["users", "leave-last-out"])
def test_no_training_sample_names_a_cold_item_and_test_samples_do(split):
    inter = builtin_interactions(120, 60, 4, seed=1)
    held = cold_items(inter, 0.1, seed=1)
    assert len(held) == 6 and held == cold_items(inter, 0.1, seed=1) != cold_items(inter, 0.1, seed=2)
    splits = make_splits(inter, seed=1, split=split, cold=0.1)
    assert splits["train"] and not any(_names(s) & held for s in splits["train"])
    assert any(s.target in held for s in splits["test"])
    assert any(_names(s) & held for s in splits["valid"])


def test_no_cold_items_changes_nothing():
    inter = builtin_interactions(120, 60, 4, seed=1)
    assert make_splits(inter, seed=1, cold=0.0) == make_splits(inter, seed=1)
    assert cold_items(inter, 0.0, seed=1) == set()


def test_prepare_records_its_cold_items_and_refuses_bad_fractions(tmp_path, capsys):
    args = ["prepare", "builtin", "--users", "120", "--items", "60", "--genres", "4"]
    assert main([*args, "--cold-items", "0.1", "--out", str(tmp_path / "d")]) == 0
    summary = json.loads((tmp_path / "d" / PREPARE_SUMMARY).read_text())
    assert len(summary["cold_items"]) == 6
    train = read_samples(tmp_path / "d" / "train.jsonl")
    assert not any(_names(s) & set(summary["cold_items"]) for s in train)
    capsys.readouterr()
    for bad in ("1", "-0.1"):
        assert main([*args, "--cold-items", bad, "--out", str(tmp_path / "x")]) == 2
        assert "setting 'cold_items'" in capsys.readouterr().err
    assert main([*args, "--cold-items", "0.99", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cold_items" in err[0] and "no training items" in err[0], err
    assert not (tmp_path / "x").exists()


def _predictions(path, hits: dict[str, int]):
    """A ranking evaluation's rows: target t -> its rank."""
    rows = [{"key": f"eval:{n}", "sample": t, "target": t, "rank": r} for n, (t, r) in enumerate(hits.items())]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_frequency_groups_and_their_bounds():
    train = [Sample(["h"], ["a", "x"], "a")] * 11 + [Sample(["h"], ["b", "x"], "b")] * 3
    groups = FrequencyGroups(train, rare=10)
    assert (groups("a"), groups("b"), groups("c")) == ("frequent", "rare", "cold")
    assert groups.bounds == {"cold": "0", "rare": "1-10", "frequent": ">10"}
    assert FrequencyGroups(train, rare=11)("a") == "rare"


def test_compare_within_each_group_of_targets(tmp_path):
    train = [Sample(["h"], ["f1", "x"], "f1")] * 3 + [Sample(["h"], ["r1", "x"], "r1")]
    ranks_a = {"f1": 0, "f2": 0, "r1": 0, "c1": 3, "c2": 0}  # f2 is never a target: cold, like c1 and c2
    ranks_b = {"f1": 2, "f2": 0, "r1": 1, "c1": 0, "c2": 0}
    a, b = _predictions(tmp_path / "a.jsonl", ranks_a), _predictions(tmp_path / "b.jsonl", ranks_b)
    result = compare_predictions([a, b], ["a", "b"], resamples=200, groups=FrequencyGroups(train, rare=2))
    assert result["n"] == 5 and list(result["groups"]) == ["cold", "rare", "frequent"]
    cold, rare, frequent = (result["groups"][g] for g in ("cold", "rare", "frequent"))
    assert (cold["n"], rare["n"], frequent["n"]) == (3, 1, 1)
    assert cold["metrics"]["a"]["hr@1"] == pytest.approx(2 / 3) and cold["metrics"]["b"]["hr@1"] == 1.0
    assert frequent["metrics"]["a"]["hr@1"] == 1.0 and frequent["metrics"]["b"]["hr@1"] == 0.0
    assert rare["bounds"] == "1-2" and frequent["bounds"] == ">2"


def test_compare_by_frequency_from_the_command_line(tmp_path, capsys):
    write_samples(tmp_path / "train.jsonl", [Sample(["h"], ["f1", "x"], "f1")] * 12)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = _predictions(tmp_path / "a" / PREDICTIONS, {"f1": 0, "c1": 1})
    b = _predictions(tmp_path / "b" / PREDICTIONS, {"f1": 1, "c1": 0})
    args = ["compare", str(a.parent), str(b.parent), "--resamples", "200"]
    assert main([*args, "--by-frequency", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "cold targets (a training target 0 times)" in out and "frequent targets (a training target >10 times)" in out
    assert "rare targets" not in out  # no sample in that group
    assert set(json.loads((tmp_path / "c.json").read_text())["groups"]) == {"cold", "frequent"}
    assert main([*args, "--by-frequency", str(tmp_path / "nowhere.jsonl")]) == 2
    assert "setting 'by_frequency'" in capsys.readouterr().err
