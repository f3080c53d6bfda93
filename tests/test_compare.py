"""`compare` pairs evaluations by what each sample asks, never by row number, and refuses what does not pair."""

import json
import math
import random

import pytest

from sdporec.cli import main
from sdporec.commands.compare import CompareConfig, run_compare
from sdporec.commands.settings import ready
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, DataError
from sdporec.evaluation.baselines import Popularity
from sdporec.evaluation.compare import format_comparison, read_predictions, require_same_samples
from sdporec.evaluation.evaluate import evaluate_ranking, write_results
from sdporec.evaluation.metrics import paired_bootstrap
from sdporec.runs import PREDICTIONS

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
    metrics, rows = evaluate_ranking(Popularity(train), data)
    write_results(path, metrics, rows)
    return path / PREDICTIONS


def test_evaluations_of_different_samples_are_refused(tmp_path, capsys):
    # Same size, same row keys eval:0..11, different questions: row numbers would pair them.
    a, b = evaluated(tmp_path / "a", samples(1)), evaluated(tmp_path / "b", samples(2))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(b) in err and "12 of 12 samples" in err and "same samples" in err
    assert "eval:0" in err  # an example, named by its row key and target


def test_one_file_in_any_row_order_pairs_with_itself(tmp_path):
    data = samples(3)
    a = evaluated(tmp_path / "a", data)
    shuffled = tmp_path / "shuffled.jsonl"
    lines = a.read_text().splitlines(True)
    random.Random(0).shuffle(lines)
    shuffled.write_text("".join(lines))
    other = evaluated(tmp_path / "other", data, samples(98, 40))  # another model on the same samples
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
    changed = {
        "history": Sample(["Item 2", "Item 1"], s.candidates, s.target),
        "candidates": Sample(s.history, ["Item 4", "Item 3"], s.target),
        "target": Sample(s.history, s.candidates, "Item 4"),
    }[field]
    assert changed.content_key() != s.content_key()
    assert Sample(list(s.history), list(s.candidates), s.target, key="other:7").content_key() == s.content_key()


def write_rows(path, rows, blank_after: int | None = None):
    """A predictions.jsonl written by hand: `rows` of (sample, rank) or (sample, hit, valid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(rows):
        row = {"key": f"eval:{i}", "sample": r[0], "target": f"T{r[0]}"}
        row.update({"rank": r[1]} if len(r) == 2 else {"hit": r[1], "valid": r[2]})
        lines.append(json.dumps(row) + "\n")
        if blank_after == i:
            lines.append("\n")
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize(
    "cfg,message",
    [
        (
            dict(predictions=["a"]),
            "setting 'predictions': give at least two models' predictions.jsonl files "
            "(one model's files on several sets of samples are joined by commas)",
        ),
        (dict(predictions=["a", "b"], names=["x"]), "setting 'names': one name per model"),
        (dict(predictions=["a", "b"], names=["x", "x"]), "setting 'names': names must differ"),
        (dict(predictions=["a", "b"], resamples=99), "setting 'resamples': must be at least 100"),
    ],
)
def test_settings_refused_with_their_message(cfg, message):
    with pytest.raises(ConfigError) as e:
        ready(CompareConfig(**cfg))
    assert str(e.value) == message


def test_settings_at_their_limits_are_accepted():
    ready(CompareConfig(predictions=["a", "b"], resamples=100))
    ready(CompareConfig(predictions=["a", "b", "c"], names=["x", "y", "z"]))


def test_a_comparison_by_hand(tmp_path, capsys):
    # a: ranks 0, 0, 1, 4; b: ranks 1, 0, 0, 9 (0-based). Means by hand from the metric definitions.
    a = write_rows(tmp_path / "alpha" / PREDICTIONS, [("s1", 0), ("s2", 0), ("s3", 1), ("s4", 4)], blank_after=1)
    b = write_rows(tmp_path / "beta" / PREDICTIONS, [("s4", 9), ("s3", 0), ("s2", 0), ("s1", 1)])
    out = tmp_path / "cmp.json"
    got = run_compare(CompareConfig(predictions=[str(a.parent), str(b)], resamples=100, seed=3, out=str(out)))
    assert got["n"] == 4 and got["resamples"] == 100 and got["seed"] == 3
    assert list(got["metrics"]) == ["alpha", "beta"]  # each file's folder name
    ma, mb = got["metrics"]["alpha"], got["metrics"]["beta"]
    assert ma["hr@1"] == 0.5 and mb["hr@1"] == 0.5
    assert ma["hr@5"] == 1.0 and mb["hr@5"] == 0.75
    assert ma["mrr"] == pytest.approx((1 + 1 + 1 / 2 + 1 / 5) / 4)
    assert mb["mrr"] == pytest.approx((1 / 2 + 1 + 1 + 1 / 10) / 4)
    assert ma["ndcg@5"] == pytest.approx((1 + 1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert mb["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 + 1 + 1 / math.log2(11)) / 4)
    diffs = {d["metric"]: d for d in got["differences"]}
    assert list(diffs) == ["hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr"]
    assert all((d["a"], d["b"]) == ("alpha", "beta") for d in diffs.values())
    assert diffs["hr@5"]["difference"] == 0.25 and diffs["hr@1"]["difference"] == 0.0
    assert out.read_text() == json.dumps(got, indent=2) + "\n"  # indented, as the docs show it
    assert capsys.readouterr().out.strip() == format_comparison(got)


def test_verdicts_follow_the_interval(tmp_path):
    # Every sample: a hits, b misses -> the interval is [1, 1]; the same files swapped -> [-1, -1]; equal -> [0, 0].
    hit = write_rows(tmp_path / "hit.jsonl", [(f"s{i}", 0) for i in range(6)])
    miss = write_rows(tmp_path / "miss.jsonl", [(f"s{i}", 7) for i in range(6)])
    verdicts = {}
    for names, files in ((("h", "m"), (hit, miss)), (("m", "h"), (miss, hit)), (("h", "h2"), (hit, hit))):
        got = run_compare(CompareConfig(predictions=[str(f) for f in files], names=list(names), resamples=100))
        d = next(d for d in got["differences"] if d["metric"] == "hr@1")
        verdicts[names] = (d["difference"], d["low"], d["high"], d["a_is"])
    assert verdicts[("h", "m")] == (1.0, 1.0, 1.0, "better")
    assert verdicts[("m", "h")] == (-1.0, -1.0, -1.0, "worse")
    assert verdicts[("h", "h2")] == (0.0, 0.0, 0.0, "not distinguishable")


def test_three_files_compare_every_pair_in_order(tmp_path):
    files = [write_rows(tmp_path / f"{n}.jsonl", [("s1", r), ("s2", 0)]) for n, r in (("x", 0), ("y", 1), ("z", 2))]
    got = run_compare(CompareConfig(predictions=[str(f) for f in files], names=["x", "y", "z"], resamples=100))
    pairs = [(d["a"], d["b"]) for d in got["differences"] if d["metric"] == "mrr"]
    assert pairs == [("x", "y"), ("x", "z"), ("y", "z")]


def test_files_in_folders_of_one_name_are_named_by_path(tmp_path):
    a = write_rows(tmp_path / "one" / "eval" / PREDICTIONS, [("s1", 0)])
    b = write_rows(tmp_path / "two" / "eval" / PREDICTIONS, [("s1", 1)])
    got = run_compare(CompareConfig(predictions=[str(a), str(b)], resamples=100))
    assert list(got["metrics"]) == [str(a), str(b)]


def test_generation_files_compare_hits_and_valid_answers(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [("s1", True, True), ("s2", False, True), ("s3", False, False)])
    b = write_rows(tmp_path / "b.jsonl", [("s1", False, False), ("s2", False, True), ("s3", True, True)])
    got = run_compare(CompareConfig(predictions=[str(a), str(b)], names=["a", "b"], resamples=100))
    assert got["metrics"] == {"a": {"hr@1": 1 / 3, "valid_ratio": 2 / 3}, "b": {"hr@1": 1 / 3, "valid_ratio": 2 / 3}}


def test_ranking_and_generation_files_compare_on_hr1(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [("s1", 0), ("s2", 3)])
    b = write_rows(tmp_path / "b.jsonl", [("s1", False, True), ("s2", False, False)])
    got = run_compare(CompareConfig(predictions=[str(a), str(b)], names=["rank", "gen"], resamples=100))
    assert got["metrics"] == {"rank": {"hr@1": 0.5}, "gen": {"hr@1": 0.0}}
    assert [(d["metric"], d["difference"]) for d in got["differences"]] == [("hr@1", 0.5)]


def test_old_and_new_files_do_not_mix(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [("s1", 0)])
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"key": "eval:0", "rank": 0}) + "\n")
    with pytest.raises(ConfigError) as e:
        run_compare(CompareConfig(predictions=[str(a), str(old)], resamples=100))
    assert str(e.value) == (
        f"setting 'predictions': {old} keys samples by row number (written by an older "
        f"sdporec) and {a} by content: evaluate the older again"
    )
    # Two old files pair by row key, as they always did.
    got = run_compare(CompareConfig(predictions=[str(old), str(old)], names=["p", "q"], resamples=100))
    assert got["n"] == 1 and got["metrics"]["p"]["hr@1"] == 1.0


@pytest.mark.parametrize(
    "text,message",
    [
        (
            '{"key": "eval:0", "sample": "s", "rank": 0}\n\n{"key": \n',
            "row line 3: not valid JSON (Expecting value: line 1 column 9 (char 8))",
        ),
        (
            "[1, 2]\n",
            "row line 1, field 'key': not a row of sdporec's predictions.jsonl (key and rank, or key and hit)",
        ),
        ('{"sample": "s", "rank": 0}\n', "row line 1, field 'key': not a row of sdporec's predictions.jsonl"),
        ('{"key": "eval:0", "sample": "s"}\n', "row line 1, field 'key': not a row of sdporec's predictions.jsonl"),
        ("\n  \n", "holds no predictions"),
        (
            '{"key": "eval:0", "rank": 0}\n{"key": "eval:0", "rank": 1}\n',
            "row line 2, field 'key': sample 'eval:0' repeats line 1: a predictions file holds each sample once",
        ),
    ],
)
def test_unreadable_rows_are_named(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        read_predictions(str(path))
    where = f"file {path}, " if message.startswith("row") else f"file {path}: "
    assert str(e.value).startswith(where + message)


def test_a_folder_reads_its_predictions_file(tmp_path):
    write_rows(tmp_path / PREDICTIONS, [("s1", True, False), ("s2", False, False)])
    file, rows = read_predictions(str(tmp_path))
    assert file == str(tmp_path / PREDICTIONS) and list(rows) == ["s1", "s2"] and rows["s1"]["hit"] is True


def test_different_samples_message_in_full(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [("s1", 0), ("s2", 0), ("s3", 0)])
    b = write_rows(tmp_path / "b.jsonl", [("s2", 0), ("s3", 0), ("s4", 0), ("s5", 0)])
    with pytest.raises(DataError) as e:
        require_same_samples(read_predictions(str(a)), read_predictions(str(b)))
    assert str(e.value) == (
        f"file {b}, field 'sample': 1 of 3 samples of {a} are not in it and 2 of its 4 not in "
        f"{a}, e.g. {a}'s eval:0 (target 'Ts1'): compare evaluations of the same samples"
    )
    with pytest.raises(DataError) as e:  # only the second file has extra samples: the example comes from it
        require_same_samples(
            read_predictions(str(a)),
            read_predictions(str(write_rows(tmp_path / "c.jsonl", [("s1", 0), ("s2", 0), ("s3", 0), ("s9", 0)]))),
        )
    message = str(e.value)
    assert "0 of 3 samples" in message and "1 of its 4" in message and "c.jsonl's eval:3 (target 'Ts9')" in message


def test_the_printed_table_by_hand():
    metrics = {"sft": {"hr@1": 0.5, "mrr": 0.625}, "s-dpo": {"hr@1": 0.75, "mrr": 0.8}}
    result = {
        "n": 4,
        "resamples": 100,
        "metrics": metrics,
        "differences": [
            {
                "a": "sft",
                "b": "s-dpo",
                "metric": "hr@1",
                "difference": -0.25,
                "low": -0.5,
                "high": 0.0,
                "a_is": "not distinguishable",
            },
            {
                "a": "sft",
                "b": "s-dpo",
                "metric": "mrr",
                "difference": -0.175,
                "low": -0.3,
                "high": -0.05,
                "a_is": "worse",
            },
        ],
    }
    assert format_comparison(result).splitlines() == [
        "4 samples, paired bootstrap (100 resamples), 95% intervals",
        "",
        "                    hr@1       mrr",
        "sft               0.5000    0.6250",
        "s-dpo             0.7500    0.8000",
        "",
        "a - b        metric      difference  95% interval          a is",
        "sft - s-dpo  hr@1           -0.2500  [-0.5000, +0.0000]    not distinguishable",
        "sft - s-dpo  mrr            -0.1750  [-0.3000, -0.0500]    worse",
    ]


def test_the_bootstrap_uses_the_given_seed_and_resamples(tmp_path):
    ranks_a, ranks_b = [0, 3, 1, 0, 7, 2, 0, 5], [1, 0, 0, 4, 2, 9, 3, 0]
    a = write_rows(tmp_path / "a.jsonl", [(f"s{i}", r) for i, r in enumerate(ranks_a)])
    b = write_rows(tmp_path / "b.jsonl", [(f"s{i}", r) for i, r in enumerate(ranks_b)])
    mrr = [[1 / (r + 1) for r in ranks] for ranks in (ranks_a, ranks_b)]
    runs = {}
    for seed, resamples in ((0, 100), (5, 100), (5, 300)):
        got = run_compare(CompareConfig(predictions=[str(a), str(b)], names=["a", "b"], resamples=resamples, seed=seed))
        d = next(d for d in got["differences"] if d["metric"] == "mrr")
        runs[seed, resamples] = (d["difference"], d["low"], d["high"])
        assert runs[seed, resamples] == pytest.approx(paired_bootstrap(*mrr, resamples, seed))
    assert len(set(runs.values())) == 3  # each seed and each number of resamples draws its own interval


def test_the_library_defaults_are_the_commands(tmp_path):
    # A Python user calling compare_predictions without settings gets the interval `sdporec compare` prints.
    from sdporec.evaluation.compare import compare_predictions

    a = write_rows(tmp_path / "a.jsonl", [(f"s{i}", r) for i, r in enumerate([0, 3, 1, 0, 7])])
    b = write_rows(tmp_path / "b.jsonl", [(f"s{i}", r) for i, r in enumerate([1, 0, 0, 4, 2])])
    got = compare_predictions([str(a), str(b)], ["a", "b"])
    cfg = CompareConfig(predictions=[str(a), str(b)], names=["a", "b"])
    assert (got["resamples"], got["seed"]) == (cfg.resamples, cfg.seed) == (2000, 0)
    assert got == run_compare(cfg)
