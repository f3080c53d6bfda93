"""One tiny end-to-end run of the CLI, then the other commands on its outputs."""

import json
import subprocess
import sys

import pytest

from sdporec.cli import main
from sdporec.evaluation.metrics import METRIC_KEYS
from sdporec.runs import (
    COMPARISON,
    CONFIG,
    METRICS,
    PREDICTIONS,
    REPORT,
    TRAIN_LOG,
    read_evaluation_metrics,
    read_pipeline_metrics,
)

TINY = [
    "--users",
    "40",
    "--items",
    "80",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--sft-epochs",
    "1",
    "--pref-epochs",
    "1",
    "--eval-samples",
    "40",
    "--batch-size",
    "16",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    proc = subprocess.run(
        [sys.executable, "-m", "sdporec", "pipeline", "--out", str(out), *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "popularity" in proc.stdout and "sdpo" in proc.stdout
    (out / "stdout.txt").write_text(proc.stdout)
    return out


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


def test_lora_sft_then_sdpo_from_the_adapter(run_dir, tmp_path):
    data = run_dir / "data"
    common = [
        "--train",
        str(data / "train.jsonl"),
        "--valid",
        str(data / "valid.jsonl"),
        "--eval-samples",
        "20",
        "--epochs",
        "1",
        "--no-progress",
        "--lora",
        "--lora-r",
        "4",
    ]
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "sft"),
                "--hidden",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "--titles",
                str(data / "items.txt"),
                *common,
            ]
        )
        == 0
    )
    sft_model = tmp_path / "sft" / "model"
    assert (sft_model / "adapter_config.json").is_file() and (sft_model / "base" / "config.json").is_file()
    assert main(["sdpo", "--model", str(sft_model), "--out", str(tmp_path / "sdpo"), *common[:-3]]) == 0
    assert (tmp_path / "sdpo" / "model" / "adapter_config.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "sdpo" / "model"),
                "--data",
                str(data / "test.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "--limit",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )


def test_reference_adapter_equals_the_sft_model(run_dir, tmp_path):
    """With an SFT adapter, the frozen reference gives exactly the SFT model's log-probs."""
    import torch

    from sdporec.data.batching import collate
    from sdporec.data.prompts import build_prompt
    from sdporec.data.samples import read_samples
    from sdporec.models.loading import load_model
    from sdporec.models.logprobs import answer_logprobs_packed
    from sdporec.models.policy import policy_from_sft

    data = run_dir / "data"
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "sft"),
                "--hidden",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "--train",
                str(data / "train.jsonl"),
                "--epochs",
                "1",
                "--no-progress",
                "--lora",
                "--titles",
                str(data / "items.txt"),
            ]
        )
        == 0
    )
    path = str(tmp_path / "sft" / "model")
    sft, codec = load_model(path)
    policy, _ = policy_from_sft(path, False, 8, 16, 0.0, "float32")
    s = read_samples(data / "test.jsonl")[:4]
    batch = collate(
        [codec.encode_prompt(build_prompt(x.history, x.candidates)) for x in s],
        [[codec.encode_answer(c) for c in x.candidates[:3]] for x in s],
        codec.pad_id,
    )
    with torch.no_grad():
        expected = answer_logprobs_packed(sft, batch)[0]
    with torch.no_grad():  # perturb the trainable copy: the reference must not move
        for n, p in policy.model.named_parameters():
            if ".default." in n:
                p.add_(0.5)
    with policy.reference() as ref:
        torch.testing.assert_close(answer_logprobs_packed(ref, batch)[0], expected)
    assert any(p.requires_grad for n, p in policy.model.named_parameters() if ".default." in n)
    assert not any(p.requires_grad for n, p in policy.model.named_parameters() if ".reference." in n)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pipeline_ends_with_a_report(run_dir):
    report = run_dir / "report"
    for name in ("loss.png", "valid_hr1.png", "rewards.png", "chosen_logp.png", "final_metrics.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC, name
    assert "| sdpo |" in (report / REPORT).read_text()


def test_report_compares_several_runs(run_dir, tmp_path, capsys):
    import shutil

    import matplotlib.image

    second = tmp_path / "second"
    shutil.copytree(run_dir, second, ignore=shutil.ignore_patterns("model", "base", "data"))
    out = tmp_path / "report"
    assert main(["report", str(run_dir), str(second), "--out", str(out)]) == 0
    text = (out / REPORT).read_text()
    assert f"| {run_dir.name}/sdpo |" in text and "| second/popularity |" in text
    for name in ("loss.png", "valid_hr1.png", "rewards.png", "chosen_logp.png", "final_metrics.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] >= 300 and image.shape[1] >= 500, name
    assert "Report:" in capsys.readouterr().out


def test_report_on_a_directory_without_logs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "neither a training run's train_log.jsonl" in capsys.readouterr().err


def test_report_on_a_damaged_checkpoint_record_names_the_file(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "sft"
    shutil.copytree(run_dir / "sft", run, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    (run / "model" / "sdporec_checkpoint.json").write_text("{not json")
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sdporec_checkpoint.json" in err and "not valid JSON" in err and "Traceback" not in err


def test_report_to_tensorboard_without_the_package_says_so(run_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )  # as if it were not installed, whether or not it is here
    data = run_dir / "data"
    code = main(
        [
            "sft",
            "--train",
            str(data / "train.jsonl"),
            "--out",
            str(tmp_path),
            "--report-to",
            "tensorboard",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--no-progress",
        ]
    )
    assert code == 2 and "pip install tensorboard" in capsys.readouterr().err


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / TRAIN_LOG).read_text().splitlines()]


def test_precomputed_reference_equals_online_and_is_reused(run_dir, tmp_path):
    data = run_dir / "data"
    common = [
        "dpo",
        "--model",
        str(run_dir / "sft" / "model"),
        "--train",
        str(data / "train.jsonl"),
        "--epochs",
        "2",
        "--negatives",
        "3",
        "--log-every",
        "1",
        "--no-progress",
    ]
    cache = tmp_path / "cache"
    assert main([*common, "--out", str(tmp_path / "online"), "--reference-pass", "online"]) == 0
    assert main([*common, "--out", str(tmp_path / "pre"), "--reference-cache", str(cache)]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 2  # one per epoch: candidate lists change per epoch
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}
    assert main([*common, "--out", str(tmp_path / "again"), "--reference-cache", str(cache)]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")} == stamps  # read, not recomputed
    online, pre, again = (_losses(tmp_path / n) for n in ("online", "pre", "again"))
    assert online == pytest.approx(pre, abs=1e-5) and pre == again
    # Settings that change the reference's numbers get their own entries, never the float32 ones.
    assert (
        main([*common, "--out", str(tmp_path / "bf16"), "--reference-cache", str(cache), "--mixed-precision", "bf16"])
        == 0
    )
    assert len(list(cache.glob("*.safetensors"))) == 4 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert main([*common, "--out", str(tmp_path / "layout"), "--reference-cache", str(cache), "--layout", "paper"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 6


def test_precompute_holds_no_reference_model(run_dir):
    from sdporec.models.policy import policy_from_sft

    policy, _ = policy_from_sft(str(run_dir / "sft" / "model"), False, 8, 16, 0.0, "float32", resident_reference=False)
    assert policy._ref_model is None


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
    assert main(["pipeline", "--out", str(copy), "--overwrite", *TINY]) == 1
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
