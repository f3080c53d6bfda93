"""Kill a training run with SIGKILL part-way, resume it, and get the uninterrupted run's results."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.training.trainer import KILL_AT_STEP

SIZE = ["--hidden", "32", "--layers", "1", "--heads", "2"]
ARGS = ["--epochs", "2", "--batch-size", "8", "--eval-every", "6", "--eval-samples", "16", "--save-every", "4",
        "--threads", "1", "--no-progress", "--lr", "3e-3"]


def log_rows(path):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume-data")
    write_small_splits(d, users=60, items=80, seed=1, n_train=320, n_valid=16)
    return ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]


@pytest.fixture(scope="module")
def sft_model(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-sft")
    assert main(["sft", "--out", str(out), "--epochs", "1", "--batch-size", "16", "--no-progress", *SIZE, *files]) == 0
    return str(out / "model")


@pytest.mark.parametrize("stage", ["sft", "sdpo-lora"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(stage, files, sft_model, tmp_path):
    """Full SFT, and S-DPO with a LoRA whose dropout draws random numbers (so the random states must be restored)."""
    command = ["sft", *SIZE] if stage == "sft" else \
        ["dpo", "--model", sft_model, "--lora", "--lora-dropout", "0.1", "--negatives", "3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*command, "--out", str(whole), *files, *ARGS]) == 0

    # The run SIGKILLs itself after optimizer step 18: checkpoint 16 is the latest; steps 17 and 18, and the
    # validation at 18 already in eval_log.jsonl, are lost and must be redone.
    proc = subprocess.run([sys.executable, "-m", "sdporec", *command, "--out", str(killed), *files, *ARGS],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
                          env={**os.environ, KILL_AT_STEP: "18"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert [r["step"] for r in log_rows(killed / "train_log.jsonl")] == [10]
    assert [r["step"] for r in log_rows(killed / "eval_log.jsonl")] == [6, 12, 18]
    kept = sorted(p.name for p in (killed / "checkpoints").glob("step-*"))
    assert kept == ["step-00000012", "step-00000016"]
    assert not (killed / "summary.json").exists()

    assert main([*command, "--out", str(killed), "--resume", *files, *ARGS]) == 0
    assert log_rows(killed / "train_log.jsonl") == log_rows(whole / "train_log.jsonl")
    assert log_rows(killed / "eval_log.jsonl") == log_rows(whole / "eval_log.jsonl")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, killed))
    assert a["best_valid_hr@1"] == b["best_valid_hr@1"] and a["optimizer_steps"] == b["optimizer_steps"] == 80
    kept = sorted(p.name for p in (killed / "checkpoints").glob("step-*"))
    assert kept == ["step-00000076", "step-00000080"]

    for run in (whole, killed):
        assert main(["evaluate", "--model", str(run / "model"), "--data", files[3], "--out", str(run / "eval"),
                     "--no-progress"]) == 0
    preds = [(d / "eval" / "predictions.jsonl").read_text() for d in (whole, killed)]
    assert preds[0] == preds[1]


def test_resume_refuses_other_settings_and_missing_checkpoints(files, tmp_path, capsys):
    assert main(["sft", "--out", str(tmp_path / "none"), "--resume", *files, *SIZE, *ARGS]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    one_epoch = list(ARGS)
    one_epoch[ARGS.index("--epochs") + 1] = "1"
    assert main(["sft", "--out", str(tmp_path / "r"), *files, *SIZE, *one_epoch]) == 0
    assert main(["sft", "--out", str(tmp_path / "r"), "--resume", *files, *SIZE, *ARGS]) == 2
    assert "other values of epochs" in capsys.readouterr().err


def test_a_log_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from sdporec.commands.train_config import TrainConfig
    from sdporec.training.runlog import RunLog

    (tmp_path / "train_log.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    RunLog(TrainConfig(train="t", out=str(tmp_path)), tmp_path, keep_until=3)
    assert (tmp_path / "train_log.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
