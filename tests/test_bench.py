"""The bench's harness: specs checked before anything runs, the runner's results files and resumption, and the
docs' tables generated from the committed results files (a table that differs fails here)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench's scripts import their harness as a sibling module
import harness  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner, steps, tables = _load("run"), _load("steps"), _load("tables")

RESULTS = {
    "spec": "bench/specs/x.yaml",
    "question": "q",
    "command": "python bench/run.py bench/specs/x.yaml",
    "date": "2026-01-02",
    "machine": {"cpu": "CPU X", "cores": 2, "gpu": None, "torch": "2.0"},
    "seeds": [0, 1],
    "rows": [
        {"id": "a", "label": "A", "n": 1000, "metrics": {"hr@1": {"mean": 0.5, "std": 0.01, "seeds": [0.49, 0.51]}}},
        {"id": "b", "label": "B", "n": 1000, "metrics": {"hr@1": {"mean": 0.25, "std": 0.0, "seeds": [0.25, 0.25]}}},
    ],
    "differences": [{"a": "A", "b": "B", "metric": "hr@1", "difference": 0.25, "low": 0.2, "high": 0.3}],
}


def test_every_committed_table_is_what_its_results_file_makes():
    assert tables.stale() == [], "run `python bench/tables.py` after bench/run.py"
    marked = [p for p in tables.documents() if tables.MARKED.search(p.read_text())]
    assert marked, "no document holds a generated table"


def test_a_table_by_hand(tmp_path):
    harness.write_results(tmp_path / "x.json", RESULTS)
    text = "before\n<!-- results x -->\nold\n<!-- /results -->\nafter\n"
    assert tables.regenerate(text, tmp_path) == (
        "before\n<!-- results x -->\n"
        "| 2 seeds (0, 1), 1,000 samples | HR@1 |\n|---|---|\n| A | **0.5000 ± 0.0100** |\n| B | 0.2500 ± 0.0000 |\n\n"
        "| difference (paired bootstrap 95%) | HR@1 |\n|---|---|\n| A − B | +0.2500 [+0.2000, +0.3000] |\n\n"
        "`python bench/run.py bench/specs/x.yaml` (2026-01-02; CPU X, 2 cores, torch 2.0)\n"
        "<!-- /results -->\nafter\n"
    )


@pytest.mark.parametrize(
    "content,fragment",
    [
        (None, "no such results file"),
        ('{"schema": "bench-results/1", "rows": [', "not a readable results file"),
        ('{"schema": "bench-results/0", "rows": []}', "bench-results/1 was expected"),
        ('{"schema": "bench-results/1", "rows": []}', "lacks command"),
    ],
)
def test_a_results_file_that_cannot_be_used_is_named(tmp_path, content, fragment):
    if content is not None:
        (tmp_path / "x.json").write_text(content)
    with pytest.raises(harness.ResultsError, match=fragment) as e:
        tables.regenerate("<!-- results x -->\n<!-- /results -->\n", tmp_path)
    assert str(tmp_path / "x.json") in str(e.value)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("rows:\n  - {id: a, steps: ['trian --out {row}']}\n", "invalid choice: 'trian'"),
        ("rows:\n  - {id: a, steps: ['sft --train t --out {row} --epochz 2']}\n", "unrecognized arguments: --epochz"),
        ("rows:\n  - {id: a, steps: ['sft --train {nowhere} --out {row}']}\n", "unknown placeholder 'nowhere'"),
        ("rows:\n  - {id: a-b}\n", "needs an `id` that is a name"),
        ("rows:\n  - {id: a}\ncompare: [[a, z]]\n", "each pair names two row ids"),
        ("rows:\n  - {id: a}\nseedz: [1]\n", "unknown key(s) seedz"),
        ("rows:\n  - {id: a, steps: ['subset a b many 0']}\n", "give `subset SOURCE DEST N SEED"),
        ("rows:\n  - {id: a, steps: ['split-tail a b c 1.5']}\n", "give `split-tail SOURCE TRAIN VALID FRACTION"),
        ("rows:\n  - {id: a, steps: ['catalogue items.txt']}\n", "give `catalogue DEST SOURCE..."),
    ],
)
def test_a_spec_naming_what_does_not_exist_is_refused_before_anything_runs(tmp_path, capsys, spec, fragment):
    (tmp_path / "s.yaml").write_text(spec)
    assert runner.main([str(tmp_path / "s.yaml"), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and str(tmp_path / "s.yaml") in err[0], err
    assert not (tmp_path / "w").exists()


TINY = """question: popularity against item counts on a tiny built-in set
seeds: [0, 1]
setup:
  - prepare builtin --out {data} --users 40 --items 80 --genres 4 --seed {seed} --overwrite
rows:
  - id: pop
    label: popularity
    steps: ['baseline popularity --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --overwrite']
  - id: counts
    label: item counts
    steps: ['baseline item-counts --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --overwrite']
compare: [[counts, pop]]
metrics: [hr@1, mrr]
"""


def test_a_tiny_spec_runs_writes_its_results_and_resumes(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    args = [str(tmp_path / "tiny.yaml"), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "tiny.json")]
    assert runner.main(args) == 0
    first = capsys.readouterr().out
    assert first.count("$ sdporec") == 6  # prepare and two rows, for each of two seeds
    got = harness.load_results("tiny", tmp_path)
    assert [r["label"] for r in got["rows"]] == ["popularity", "item counts"] and got["seeds"] == [0, 1]
    from sdporec.runs import read_evaluation_metrics

    for r in got["rows"]:
        measured = [read_evaluation_metrics(tmp_path / "w" / "tiny" / f"seed{s}" / r["id"])["hr@1"] for s in (0, 1)]
        assert r["metrics"]["hr@1"]["seeds"] == measured and r["metrics"]["hr@1"]["mean"] == sum(measured) / 2
    assert [d["metric"] for d in got["differences"]] == ["hr@1", "mrr"]
    diff = got["differences"][0]
    assert (diff["a"], diff["b"], diff["metric"]) == ("item counts", "popularity", "hr@1")

    def pooled(row: str) -> float:  # the seeds' samples pooled, as `sdporec compare` pools them
        found = [read_evaluation_metrics(tmp_path / "w" / "tiny" / f"seed{s}" / row) for s in (0, 1)]
        return sum(m["hr@1"] * m["n"] for m in found) / sum(m["n"] for m in found)

    assert diff["difference"] == pytest.approx(pooled("counts") - pooled("pop"))
    assert runner.main(args) == 0 and "$ sdporec" not in capsys.readouterr().out  # finished work is kept
    assert json.loads((tmp_path / "tiny.json").read_text())["rows"] == got["rows"]
    # The seeds side by side, each in its own process, measure the same.
    side = [
        str(tmp_path / "tiny.yaml"),
        "--work",
        str(tmp_path / "w2"),
        "--out",
        str(tmp_path / "t2.json"),
        "--jobs",
        "2",
    ]
    assert runner.main(side) == 0
    again = harness.load_results("t2", tmp_path)
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in got["rows"]]


CATALOGUE = """question: a list and the whole catalogue in one spec
seeds: [0]
setup:
  - prepare builtin --out {data} --users 40 --items 80 --genres 4 --overwrite
rows:
  - id: pop_list
    steps: ['baseline popularity --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --overwrite']
  - id: pop_all
    steps: ['baseline popularity --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --candidates all']
  - id: counts_all
    steps: ['baseline item-counts --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --candidates all']
compare: [[counts_all, pop_all]]
metrics: [hr@1, hr@10]
"""


def test_a_spec_may_hold_both_protocols_and_compares_within_one(tmp_path):
    (tmp_path / "c.yaml").write_text(CATALOGUE)
    assert (
        runner.main([str(tmp_path / "c.yaml"), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "c.json")]) == 0
    )
    got = harness.load_results("c", tmp_path)
    rows = {r["id"]: r["metrics"] for r in got["rows"]}
    assert "hr@10" not in rows["pop_list"] and "hr@10" in rows["pop_all"]  # a list of 20 has no HR@10 of its own
    assert rows["pop_all"]["hr@1"]["mean"] < rows["pop_list"]["hr@1"]["mean"]  # 1 of about 70 is harder than 1 of 20
    assert {(d["a"], d["b"], d["metric"]) for d in got["differences"]} == {
        ("counts_all", "pop_all", "hr@1"),
        ("counts_all", "pop_all", "hr@10"),
    }
    assert "| pop_list | 0." in tables.render(got) and " | - |" in tables.render(got)


COLD = """question: cold targets apart
seeds: [0]
setup:
  - prepare builtin --out {data} --users 60 --items 80 --genres 4 --cold-items 0.2 --overwrite
rows:
  - id: pop
    steps: ['baseline popularity --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --candidates all']
  - id: counts
    steps: ['baseline item-counts --train {data}/train.jsonl --eval {data}/test.jsonl --out {row} --candidates all']
compare: [[counts, pop]]
metrics: [hr@10]
groups: "{data}/train.jsonl"
"""


def test_groups_compare_again_within_cold_rare_and_frequent_targets(tmp_path, capsys):
    """As `sdporec compare --by-frequency` reports them, in the results file and the generated table."""
    from sdporec.cli import main

    (tmp_path / "cold.yaml").write_text(COLD)
    assert (
        runner.main([str(tmp_path / "cold.yaml"), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "cold.json")])
        == 0
    )
    got = harness.load_results("cold", tmp_path)
    seed = tmp_path / "w" / "cold" / "seed0"
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                str(seed / "counts"),
                str(seed / "pop"),
                "--by-frequency",
                str(seed / "data" / "train.jsonl"),
                "--out",
                str(tmp_path / "cmp.json"),
            ]
        )
        == 0
    )
    expected = json.loads((tmp_path / "cmp.json").read_text())["groups"]
    assert set(got["groups"]) == set(expected) and "cold" in got["groups"]
    for name, group in got["groups"].items():
        assert group["n"] == expected[name]["n"] and group["bounds"] == expected[name]["bounds"]
        assert group["metrics"]["counts"]["hr@10"] == expected[name]["metrics"]["counts"]["hr@10"]
        want = next(d for d in expected[name]["differences"] if d["metric"] == "hr@10")
        assert group["differences"] == [{k: want[k] for k in ("a", "b", "metric", "difference", "low", "high")}]
    cold = got["groups"]["cold"]
    assert f"| cold targets (a training target 0 times), {cold['n']:,} samples | HR@10 |" in tables.render(got)
    (tmp_path / "two.yaml").write_text(COLD.replace("seeds: [0]", "seeds: [0, 1]"))
    assert runner.main([str(tmp_path / "two.yaml"), "--dry-run"]) == 2
    assert "give one seed" in capsys.readouterr().err


def test_rows_of_different_sizes_each_say_theirs():
    rows = [dict(RESULTS["rows"][0], n=2767), dict(RESULTS["rows"][1], n=10497)]
    text = tables.render({**RESULTS, "rows": rows, "differences": []})
    assert text.startswith("| 2 seeds (0, 1) | HR@1 | samples |\n") and "| B | 0.2500 ± 0.0000 | 10,497 |" in text


def test_split_tail_holds_out_the_last_rows(tmp_path):
    from sdporec.data.samples import Sample, read_samples, write_samples

    rows = [Sample([f"h{i}"], [f"t{i}", "x"], f"t{i}") for i in range(20)]
    write_samples(tmp_path / "all.jsonl", rows)
    steps.split_tail(str(tmp_path / "all.jsonl"), str(tmp_path / "t.jsonl"), str(tmp_path / "v.jsonl"), "0.1")
    train, valid = read_samples(tmp_path / "t.jsonl"), read_samples(tmp_path / "v.jsonl")
    assert [s.target for s in train] == [f"t{i}" for i in range(18)]
    assert [s.target for s in valid] == ["t18", "t19"]


def test_subset_draws_n_samples_by_seed_and_name(tmp_path):
    from sdporec.data.samples import Sample, read_samples, write_samples

    write_samples(tmp_path / "all.jsonl", [Sample([f"h{i}"], [f"t{i}", "x"], f"t{i}") for i in range(50)])

    def draw(name: str, seed: str) -> list[str]:
        steps.subset(str(tmp_path / "all.jsonl"), str(tmp_path / name), "10", seed)
        return [s.target for s in read_samples(tmp_path / name)]

    first = draw("train.jsonl", "0")
    assert len(set(first)) == 10 and first == sorted(first, key=lambda t: int(t[1:]))  # the source's order
    assert draw("train.jsonl", "0") == first  # the same draw again
    assert draw("train.jsonl", "1") != first and draw("valid.jsonl", "0") != first
    with pytest.raises(harness.ResultsError, match="has 50 samples, fewer than the 51"):
        steps.subset(str(tmp_path / "all.jsonl"), str(tmp_path / "x.jsonl"), "51", "0")


def test_catalogue_step_writes_every_title_the_files_name(tmp_path):
    from sdporec.data.samples import Sample, write_samples
    from sdporec.evaluation.catalogue import Catalogue

    write_samples(tmp_path / "a.jsonl", [Sample(["h1", "h2"], ["t1", "x"], "t1")])
    write_samples(tmp_path / "b.jsonl", [Sample(["h2"], ["y", "t2"], "t2"), Sample(["t1"], ["z", "h1"], "h1")])
    steps.catalogue(str(tmp_path / "cat" / "items.txt"), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert (tmp_path / "cat" / "items.txt").read_text() == "h1\nh2\nt1\nt2\nx\ny\nz\n"
    assert Catalogue.read(tmp_path / "cat" / "items.txt").titles == ["h1", "h2", "t1", "t2", "x", "y", "z"]


def test_finished_steps_are_kept_until_one_changes(tmp_path, capsys):
    from sdporec.data.samples import Sample, write_samples

    write_samples(tmp_path / "all.jsonl", [Sample([f"h{i}"], [f"t{i}", "x"], f"t{i}") for i in range(10)])
    first = ["split-tail", str(tmp_path / "all.jsonl"), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "0.5"]
    second = ["split-tail", str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl"), str(tmp_path / "d.jsonl"), "0.2"]
    marker = tmp_path / ".row.json"
    runner.run_once(marker, [first, second], dry=False)
    assert capsys.readouterr().out.count("$ split-tail") == 2
    runner.run_once(marker, [first, second], dry=False)
    assert capsys.readouterr().out == ""  # nothing changed: nothing runs
    changed = [*second[:-1], "0.4"]
    runner.run_once(marker, [first, changed], dry=False)
    assert capsys.readouterr().out.count("$ split-tail") == 1  # the first step is kept
    runner.run_once(marker, [[*first[:-1], "0.3"], changed], dry=False)
    assert capsys.readouterr().out.count("$ split-tail") == 2  # a changed step runs again with every later one
