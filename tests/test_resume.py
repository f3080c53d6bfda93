"""Kill a training run with SIGKILL part-way, resume it, and get the uninterrupted run's results."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.runs import EVAL_LOG, PREDICTIONS, SUMMARY, TRAIN_LOG
from sdporec.training.trainer import KILL_AT_STEP

SIZE = ["--hidden", "32", "--layers", "1", "--heads", "2"]
ARGS = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--eval-every",
    "6",
    "--eval-samples",
    "16",
    "--save-every",
    "4",
    "--threads",
    "1",
    "--no-progress",
    "--lr",
    "3e-3",
]


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
    command = (
        ["sft", *SIZE]
        if stage == "sft"
        else ["dpo", "--model", sft_model, "--lora", "--lora-dropout", "0.1", "--negatives", "3"]
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*command, "--out", str(whole), *files, *ARGS]) == 0

    # The run SIGKILLs itself after optimizer step 18: checkpoint 16 is the latest; steps 17 and 18, and the
    # validation at 18 already in eval_log.jsonl, are lost and must be redone.
    proc = subprocess.run(
        [sys.executable, "-m", "sdporec", *command, "--out", str(killed), *files, *ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        env={**os.environ, KILL_AT_STEP: "18"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert [r["step"] for r in log_rows(killed / TRAIN_LOG)] == [10]
    assert [r["step"] for r in log_rows(killed / EVAL_LOG)] == [6, 12, 18]
    kept = sorted(p.name for p in (killed / "checkpoints").glob("step-*"))
    assert kept == ["step-00000012", "step-00000016"]
    assert not (killed / SUMMARY).exists()

    assert main([*command, "--out", str(killed), "--resume", *files, *ARGS]) == 0
    assert log_rows(killed / TRAIN_LOG) == log_rows(whole / TRAIN_LOG)
    assert log_rows(killed / EVAL_LOG) == log_rows(whole / EVAL_LOG)
    a, b = (json.loads((d / SUMMARY).read_text()) for d in (whole, killed))
    assert a["best_valid_hr@1"] == b["best_valid_hr@1"] and a["optimizer_steps"] == b["optimizer_steps"] == 80
    kept = sorted(p.name for p in (killed / "checkpoints").glob("step-*"))
    assert kept == ["step-00000076", "step-00000080"]

    for run in (whole, killed):
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(run / "model"),
                    "--data",
                    files[3],
                    "--out",
                    str(run / "eval"),
                    "--no-progress",
                ]
            )
            == 0
        )
    preds = [(d / "eval" / PREDICTIONS).read_text() for d in (whole, killed)]
    assert preds[0] == preds[1]


def test_resume_refuses_other_settings_and_missing_checkpoints(files, tmp_path, capsys):
    assert main(["sft", "--out", str(tmp_path / "none"), "--resume", *files, *SIZE, *ARGS]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    one_epoch = list(ARGS)
    one_epoch[ARGS.index("--epochs") + 1] = "1"
    assert main(["sft", "--out", str(tmp_path / "r"), *files, *SIZE, *one_epoch]) == 0
    assert main(["sft", "--out", str(tmp_path / "r"), "--resume", *files, *SIZE, *ARGS]) == 2
    assert "other values of epochs" in capsys.readouterr().err
    # A run written before a setting existed resumes under that setting's old behaviour, and only under it.
    states = sorted((tmp_path / "r" / "checkpoints").glob("*/trainer_state.json"))
    for task in (None, "next-item"):
        for path in states:
            saved = json.loads(path.read_text())
            saved["config"].pop("task", None)
            saved["config"] |= {"task": task} if task else {}
            path.write_text(json.dumps(saved))
        code = main(["sft", "--out", str(tmp_path / "r"), "--resume", *files, *SIZE, *one_epoch])
        assert (code, "other values of task" in capsys.readouterr().err) == ((0, False) if task is None else (2, True))


def test_a_log_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from sdporec.commands.train_config import TrainConfig
    from sdporec.training.runlog import RunLog

    (tmp_path / TRAIN_LOG).write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    RunLog(TrainConfig(train="t", out=str(tmp_path)), tmp_path, keep_until=3)
    assert (tmp_path / TRAIN_LOG).read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'


def test_the_training_state_round_trips_through_safetensors_and_json(tmp_path):
    """Every part `--resume` restores, including the fp16 loss scaler (CUDA-only in training, so not reached by
    the runs above): saved, disturbed, loaded into fresh objects, and equal to what was saved."""
    import random

    import numpy as np
    import torch

    from sdporec.training.state import load_training_state, save_training_state

    def parts(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
        model[0].bias.requires_grad_(False)  # a frozen weight is neither saved nor restored
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, betas=(0.8, 0.9))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        return model, optimizer, scheduler, scaler

    model, optimizer, scheduler, scaler = parts(0)
    for _ in range(3):
        scaler.scale(model(torch.randn(5, 4)).square().sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    save_training_state(tmp_path, model, optimizer, scheduler, scaler, rank=0, main=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    fresh = parts(1)
    load_training_state(tmp_path, *fresh, rank=0)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    for name, p in model.named_parameters():
        assert torch.equal(dict(fresh[0].named_parameters())[name], p) == p.requires_grad, name
    saved, loaded = optimizer.state_dict(), fresh[1].state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, state in saved["state"].items():
        assert all(torch.equal(v, loaded["state"][i][k]) for k, v in state.items())
    assert fresh[2].state_dict() == scheduler.state_dict() and fresh[3].state_dict() == scaler.state_dict()
    assert scaler.get_scale() != 2.0**10  # the scaler's state moved, so equality above means something
