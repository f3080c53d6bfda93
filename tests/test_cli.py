"""One tiny end-to-end run of the CLI (`run_dir`, conftest.py), then the other commands on its outputs: evaluate,
recommend, compare, bad input and failures. Training options on it: test_cli_training.py; reports:
test_cli_report.py."""

import json
import sys

import pytest
from conftest import PIPELINE_TINY

from sdporec.cli import main
from sdporec.evaluation.metrics import METRIC_KEYS
from sdporec.runs import (
    COMPARISON,
    CONFIG,
    METRICS,
    PREDICTIONS,
    TRAIN_LOG,
    read_evaluation_metrics,
    read_pipeline_metrics,
)


def test_pipeline_ends_with_s_dpo_against_sft_and_dpo_with_intervals(run_dir):
    stdout = (run_dir / "stdout.txt").read_text()
    got = json.loads((run_dir / COMPARISON).read_text())
    metrics = read_pipeline_metrics(run_dir / METRICS)
    assert got["n"] == metrics["sdpo"]["n"] and got["metrics"]["S-DPO"]["hr@1"] == metrics["sdpo"]["hr@1"]
    pairs = {(d["a"], d["b"]) for d in got["differences"]}
    assert pairs == {("S-DPO", "SFT"), ("S-DPO", "DPO"), ("SFT", "DPO")}
    first = next(d for d in got["differences"] if (d["a"], d["b"], d["metric"]) == ("S-DPO", "SFT", "hr@1"))
    assert first["difference"] == pytest.approx(metrics["sdpo"]["hr@1"] - metrics["sft"]["hr@1"])
    assert f"S-DPO against SFT and DPO on the same {got['n']} test samples:" in stdout
    assert "S-DPO - SFT" in stdout and "95% interval" in stdout


def test_pipeline_writes_metrics_for_every_stage(run_dir):
    metrics = read_pipeline_metrics(run_dir / METRICS)
    assert list(metrics) == ["popularity", "sft", "dpo", "sdpo"]
    for m in metrics.values():
        assert set(m) == set(METRIC_KEYS)
        assert 0 <= m["hr@1"] <= m["hr@5"] <= 1 and m["valid_ratio"] == 1.0 and m["n"] > 0
    for stage in ("sft", "dpo", "sdpo"):
        assert (run_dir / stage / CONFIG).is_file()
        assert (run_dir / stage / "model" / "config.json").is_file()
        assert (run_dir / stage / "model" / "sdporec_codec.json").is_file()
        # Answer-only SFT: validation tries the prompt alone, and every stage is ranked by it.
        assert read_evaluation_metrics(run_dir / "eval" / stage)["history_readout"] == 0
    rows = [json.loads(x) for x in (run_dir / "eval" / "sdpo" / PREDICTIONS).read_text().splitlines()]
    assert len(rows) == metrics["sdpo"]["n"] and len(rows[0]["ranked"]) == 20
    log = [json.loads(x) for x in (run_dir / "sdpo" / TRAIN_LOG).read_text().splitlines()]
    for key in ("reward_chosen", "reward_rejected", "reward_margin", "accuracy", "logp_chosen", "loss"):
        assert key in log[-1]


def test_evaluate_generation_protocol(run_dir, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            str(run_dir / "sft" / "model"),
            "--data",
            str(run_dir / "data" / "test.jsonl"),
            "--out",
            str(tmp_path),
            "--protocol",
            "generation",
            "--limit",
            "20",
            "--no-progress",
        ]
    )
    assert code == 0
    m = read_evaluation_metrics(tmp_path)
    assert m["n"] == 20 and 0 <= m["hr@1"] <= m["valid_ratio"] <= 1 and m["layout"] is None
    rows = [json.loads(x) for x in (tmp_path / PREDICTIONS).read_text().splitlines()]
    assert all(r["valid"] == (r["answer"] is not None) for r in rows)
    assert (tmp_path / CONFIG).is_file()


def test_ranking_evaluate_matches_pipeline(run_dir, tmp_path, monkeypatch):
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run_dir / "sdpo" / "model"),
                "--data",
                str(run_dir / "data" / "test.jsonl"),
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    again = read_evaluation_metrics(tmp_path)
    pipeline = read_pipeline_metrics(run_dir / METRICS)["sdpo"]
    assert again["hr@1"] == pipeline["hr@1"] and again["mrr"] == pytest.approx(pipeline["mrr"])
    assert again["layout"] == "packed"  # auto on a CPU; generation names none
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run_dir / "sdpo" / "model"),
                "--data",
                str(run_dir / "data" / "test.jsonl"),
                "--out",
                str(tmp_path / "flex"),
                "--no-progress",
                "--layout",
                "flex",
                "--limit",
                "30",
            ]
        )
        == 0
    )
    flex = read_evaluation_metrics(tmp_path / "flex")
    assert flex["layout"] == "flex"
    monkeypatch.setattr("sdporec.models.flex.available", lambda: False)  # a torch without FlexAttention
    monkeypatch.setattr("sdporec.models.scoring._warned", set())
    with pytest.warns(UserWarning, match="no FlexAttention; scoring with the packed layout"):
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(run_dir / "sdpo" / "model"),
                    "--data",
                    str(run_dir / "data" / "test.jsonl"),
                    "--out",
                    str(tmp_path / "no-flex"),
                    "--no-progress",
                    "--layout",
                    "flex",
                    "--limit",
                    "30",
                ]
            )
            == 0
        )
    assert read_evaluation_metrics(tmp_path / "no-flex")["layout"] == "packed"  # what ran
    first = [json.loads(x) for x in (tmp_path / PREDICTIONS).read_text().splitlines()[:30]]
    assert [json.loads(x)["rank"] for x in (tmp_path / "flex" / PREDICTIONS).read_text().splitlines()] == [
        r["rank"] for r in first
    ]


def test_recommend_ranks_every_candidate(run_dir, capsys):
    sample = json.loads((run_dir / "data" / "test.jsonl").read_text().splitlines()[0])
    assert (
        main(
            [
                "recommend",
                "--model",
                str(run_dir / "sdpo" / "model"),
                "--history",
                *sample["historyList"],
                "--candidates",
                *sample["itemList"],
                "--json",
            ]
        )
        == 0
    )
    ranked = json.loads(capsys.readouterr().out)
    assert sorted(r["title"] for r in ranked) == sorted(sample["itemList"])
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_bad_input_exits_with_file_row_field(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"historyList": ["a"], "itemList": ["b", "c"], "trueSelection": "b"}\n'
        '{"historyList": ["a"], "itemList": ["b", "c"], "trueSelection": "z"}\n'
    )
    code = main(
        ["evaluate", "--model", str(run_dir / "sft" / "model"), "--data", str(bad), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "row line 2" in err and "'trueSelection'" in err
    assert not (tmp_path / "o" / METRICS).exists()


def test_recommend_from_a_json_file_with_a_joined_history(run_dir, tmp_path, capsys):
    sample = json.loads((run_dir / "data" / "test.jsonl").read_text().splitlines()[0])
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"historyList": "::".join(sample["historyList"]), "itemList": sample["itemList"]}))
    assert (
        main(["recommend", "--model", str(run_dir / "sft" / "model"), "--input", str(request), "--top", "3", "--json"])
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 3
    request.write_text(json.dumps({"historyList": [], "itemList": sample["itemList"]}))
    assert main(["recommend", "--model", str(run_dir / "sft" / "model"), "--input", str(request)]) == 2
    assert "field 'historyList'" in capsys.readouterr().err


def test_compare_pairs_the_samples_and_names_a_mismatch(run_dir, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert (
        main(
            [
                "compare",
                str(run_dir / "eval" / "sdpo"),
                str(run_dir / "eval" / "popularity"),
                str(run_dir / "eval" / "sdpo" / PREDICTIONS),
                "--names",
                "a",
                "b",
                "a2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    metrics = read_pipeline_metrics(run_dir / METRICS)
    assert result["metrics"]["a"]["hr@1"] == pytest.approx(metrics["sdpo"]["hr@1"])
    assert result["metrics"]["b"]["mrr"] == pytest.approx(metrics["popularity"]["mrr"])
    same = [d for d in result["differences"] if d["a"] == "a" and d["b"] == "a2"]
    assert same and all(
        d["difference"] == d["low"] == d["high"] == 0 and d["a_is"] == "not distinguishable" for d in same
    )
    assert "95% interval" in capsys.readouterr().out
    short = tmp_path / "short.jsonl"
    short.write_text("".join((run_dir / "eval" / "sdpo" / PREDICTIONS).read_text().splitlines(True)[:-1]))
    assert main(["compare", str(run_dir / "eval" / "sdpo"), str(short)]) == 2
    err = capsys.readouterr().err
    assert str(short) in err and "same samples" in err


def test_recommender_ranks_as_the_command_does(run_dir, capsys):
    import sdporec

    sample = json.loads((run_dir / "data" / "test.jsonl").read_text().splitlines()[0])
    model = str(run_dir / "sdpo" / "model")
    ranked = sdporec.Recommender.load(model).rank(sample["historyList"], sample["itemList"])
    assert sorted(t for t, _ in ranked) == sorted(sample["itemList"])
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    capsys.readouterr()
    assert (
        main(
            [
                "recommend",
                "--model",
                model,
                "--history",
                *sample["historyList"],
                "--candidates",
                *sample["itemList"],
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert [r["title"] for r in printed] == [t for t, _ in ranked]
    assert [r["score"] for r in printed] == pytest.approx([s for _, s in ranked], abs=1e-5)
    with pytest.raises(sdporec.DataError, match="No Such Title"):
        sdporec.Recommender.load(model).rank(sample["historyList"], ["No Such Title"] + sample["itemList"][1:])


def test_recommend_mixes_in_the_history_readout_as_evaluate_does(run_dir, capsys):
    import sdporec
    from sdporec.data.samples import Sample
    from sdporec.evaluation.scoring import LMScorer

    sample = json.loads((run_dir / "data" / "test.jsonl").read_text().splitlines()[0])
    model = str(run_dir / "sft" / "model")
    recommender = sdporec.Recommender.load(model, history_readout=0.5)
    ranked = dict(recommender.rank(sample["historyList"], sample["itemList"]))
    request = Sample(sample["historyList"], sample["itemList"], sample["itemList"][0], None, "r")
    scorer = LMScorer(recommender.model, recommender.codec, recommender.domain, progress=False)
    expected = [(p + h) / 2 for p, h in zip(scorer.prompt_scores([request])[0], scorer.history_scores([request])[0])]
    assert [ranked[t] for t in sample["itemList"]] == pytest.approx(expected, abs=1e-5)
    assert (
        main(
            [
                "recommend",
                "--model",
                model,
                "--history",
                *sample["historyList"],
                "--candidates",
                *sample["itemList"],
                "--history-readout",
                "2",
            ]
        )
        == 2
    )
    assert "history_readout" in capsys.readouterr().err


def test_a_pipeline_that_fails_puts_the_earlier_run_back(run_dir, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "again"
    shutil.copytree(run_dir, copy)
    before = {str(p.relative_to(copy)): p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()}

    def fail(cfg):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr("sdporec.commands.pipeline.run_preference", fail)  # SFT has finished, DPO fails
    assert main(["pipeline", "--out", str(copy), "--overwrite", *PIPELINE_TINY]) == 1
    assert "back in place" in capsys.readouterr().err
    after = {str(p.relative_to(copy)): p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()}
    assert after == before and not (copy / ".replaced").exists()


def test_a_reader_that_stops_early_ends_the_command_quietly(run_dir, tmp_path, monkeypatch, capsys):
    """`sdporec compare ... | head -1`: no 'internal error' when the pipe closes; the exit status says so (141)."""
    import os

    from sdporec.cli import entry

    class ClosedPipe:  # stdout whose reader has gone: every write and flush fails as a closed pipe's does
        def __init__(self, fd):
            self.fd = fd

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return self.fd

    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    monkeypatch.setattr(sys, "stdout", ClosedPipe(fd))
    monkeypatch.setattr(sys, "argv", ["sdporec", "compare", *(str(run_dir / "eval" / n) for n in ("sdpo", "sft"))])
    with pytest.raises(SystemExit) as ended:
        entry()
    os.close(fd)
    assert ended.value.code == 141 and capsys.readouterr().err == ""
