"""`compare` with seeds joined by commas: each model's evaluations pooled, the samples drawn whole, and sets that
do not match between models refused by name."""

import pytest
from test_compare import write_rows

from sdporec.cli import main
from sdporec.commands.compare import CompareConfig, run_compare
from sdporec.evaluation.metrics import paired_bootstrap
from sdporec.runs import PREDICTIONS


def test_seeds_joined_by_commas_pool_evaluations_and_draw_samples_whole(tmp_path, capsys):
    # Two seeds' test sets: s0..s3, and t0, t1 plus s1 again (drawn by both seeds), in key order.
    ranks = {"a": ([0, 0, 1, 4], [2, 0, 1]), "b": ([1, 0, 0, 9], [0, 5, 0])}
    keys = (["s0", "s1", "s2", "s3"], ["s1", "t0", "t1"])
    files = {
        m: [
            write_rows(tmp_path / m / f"seed{i}.jsonl", list(zip(ks, rs)))
            for i, (ks, rs) in enumerate(zip(keys, ranks[m]))
        ]
        for m in ranks
    }
    joined = [",".join(str(f) for f in files[m]) for m in ("a", "b")]
    got = run_compare(CompareConfig(predictions=joined, names=["a", "b"], resamples=300, seed=2))
    assert got["n"] == 7 and got["sets"] == [4, 3] and got["distinct_samples"] == 6
    assert got["metrics"]["a"]["hr@1"] == 3 / 7 and got["metrics"]["b"]["hr@1"] == 4 / 7
    assert got["metrics"]["b"]["mrr"] == pytest.approx((1 / 2 + 1 + 1 + 1 / 10 + 1 + 1 / 6 + 1) / 7)
    mrr = {m: [1 / (r + 1) for rs in ranks[m] for r in rs] for m in ranks}
    labels = [k for ks in keys for k in ks]
    d = next(d for d in got["differences"] if d["metric"] == "mrr")
    assert (d["difference"], d["low"], d["high"]) == pytest.approx(
        paired_bootstrap(mrr["a"], mrr["b"], 300, 2, clusters=labels)
    )
    assert "7 evaluations of 6 samples in 2 sets (4, 3), each sample drawn with all its evaluations," in (
        capsys.readouterr().out
    )
    from sdporec.evaluation.compare import compare_predictions

    as_lists = [[str(f) for f in files[m]] for m in ("a", "b")]  # a Python user passes lists of paths
    assert compare_predictions(as_lists, ["a", "b"], 300, 2) == got


def test_pooled_sets_must_match_in_number_and_order(tmp_path, capsys):
    a = [write_rows(tmp_path / f"a{i}.jsonl", [(f"{p}{j}", j) for j in range(3)]) for i, p in enumerate("st")]
    b = [write_rows(tmp_path / f"b{i}.jsonl", [(f"{p}{j}", 0) for j in range(3)]) for i, p in enumerate("st")]
    assert main(["compare", f"{a[0]},{a[1]}", str(b[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "setting 'predictions'" in err and "(got 2, 1)" in err
    assert main(["compare", f"{a[0]},{a[1]}", f"{b[1]},{b[0]}"]) == 2  # the sets in another order do not pair
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(b[1]) in err and "3 of 3 samples" in err
    assert main(["compare", f"{a[0]},,{a[1]}", f"{b[0]},{b[1]}"]) == 2
    assert "has an empty path" in capsys.readouterr().err
    assert main(["compare", f"{a[0]},{a[1]}", f"{b[0]},{b[1]}", "--resamples", "100"]) == 0


def test_sets_of_the_same_samples_count_each_sample_once_in_the_draws(tmp_path, capsys):
    # Seeds evaluated on one test file: the mean is each sample's mean over the seeds, drawn once per sample.
    seeds = {"a": ([0, 3, 1, 0], [2, 0, 1, 0]), "b": ([1, 0, 0, 4], [1, 1, 0, 9])}
    files = {
        m: [
            write_rows(tmp_path / f"s{i}" / m / PREDICTIONS, [(f"s{j}", r) for j, r in enumerate(rs)])
            for i, rs in enumerate(seeds[m])
        ]
        for m in seeds
    }
    got = run_compare(
        CompareConfig(predictions=[",".join(str(f.parent) for f in files[m]) for m in seeds], resamples=200, seed=4)
    )
    assert list(got["metrics"]) == ["a", "b"]  # each first file's folder name
    assert got["n"] == 8 and got["sets"] == [4, 4] and got["distinct_samples"] == 4
    averaged = {m: [(1 / (x + 1) + 1 / (y + 1)) / 2 for x, y in zip(*seeds[m])] for m in seeds}
    assert got["metrics"]["a"]["mrr"] == pytest.approx(sum(averaged["a"]) / 4)
    d = next(d for d in got["differences"] if d["metric"] == "mrr")
    # Equal cluster sizes: the cluster bootstrap is the bootstrap of the per-sample means.
    assert (d["difference"], d["low"], d["high"]) == pytest.approx(
        paired_bootstrap(averaged["a"], averaged["b"], 200, 4)
    )
    assert "8 evaluations of 4 samples in 2 sets (4, 4)," in capsys.readouterr().out


def test_one_models_files_of_two_protocols_are_refused(tmp_path, capsys):
    a0 = write_rows(tmp_path / "a0.jsonl", [("s0", 0), ("s1", 1), ("s2", 2)])
    b0 = write_rows(tmp_path / "b0.jsonl", [("s0", 1), ("s1", 1), ("s2", 1)])
    gen = write_rows(tmp_path / "gen.jsonl", [("t0", True, True), ("t1", False, True), ("t2", False, False)])
    t0 = write_rows(tmp_path / "t0.jsonl", [("t0", 0), ("t1", 1), ("t2", 2)])
    assert main(["compare", f"{a0},{gen}", f"{b0},{t0}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"file {gen}, field 'rank': a generation evaluation joined to {a0}, a ranking one: one "
        "model's files must be of one protocol"
    )


def test_a_later_set_that_differs_between_models_is_refused_by_name(tmp_path, capsys):
    a = [write_rows(tmp_path / f"a{i}.jsonl", [(f"{p}{j}", j) for j in range(3)]) for i, p in enumerate("st")]
    b1 = write_rows(tmp_path / "b1.jsonl", [("u0", 0), ("u1", 0), ("u2", 0)])  # set 1 matches, set 2 does not
    assert main(["compare", f"{a[0]},{a[1]}", f"{a[0]},{b1}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"file {b1}" in err and f"3 of 3 samples of {a[1]}" in err


def test_a_path_with_a_comma_that_exists_is_one_file(tmp_path):
    odd = write_rows(tmp_path / "lr=1e-4,bs=8" / PREDICTIONS, [("s0", 0), ("s1", 3)])
    other = write_rows(tmp_path / "other" / PREDICTIONS, [("s0", 1), ("s1", 0)])
    got = run_compare(CompareConfig(predictions=[str(odd.parent), str(other)], resamples=100))
    assert got["sets"] == [2] and list(got["metrics"]) == ["lr=1e-4,bs=8", "other"]
    from sdporec.evaluation.compare import compare_predictions

    assert compare_predictions([odd, other], resamples=100) == got  # Path objects, as read_predictions takes
