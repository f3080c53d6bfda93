"""Two processes on CPU (gloo, through torchrun): the same losses as one process with the same global batch,
and evaluation that scores every sample exactly once."""

import json
import os
import subprocess
import sys

import pytest
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.processes import even_shard, shard
from sdporec.runs import EVAL_LOG, PREDICTIONS, SUMMARY, TRAIN_LOG, read_evaluation_metrics
from sdporec.training.distributed import micro_batch

COMMON = ["--threads", "1", "--device", "cpu", "--no-progress", "--log-every", "1", "--eval-samples", "16"]
SIZE = ["--hidden", "32", "--layers", "1", "--heads", "2"]


def torchrun(*args: str) -> None:
    # PYTHONFAULTHANDLER: a rank that dies on a signal prints where it was.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "sdporec",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    # The ranks' own messages come first, the launcher's summary last: show both ends, and how far rank 0 got.
    assert proc.returncode == 0, (
        proc.stderr[:4000] + "\n[...]\n" + proc.stderr[-2000:] + "\n[stdout]\n" + proc.stdout[-2000:]
    )


def losses(run):
    return [json.loads(x)["loss"] for x in (run / TRAIN_LOG).read_text().splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp-data")
    write_small_splits(d, users=40, items=60, seed=2, n_train=64, n_valid=13)
    return d


def test_shards_cover_every_item_once():
    for n in (0, 1, 5, 13):
        for world in (1, 2, 3):
            parts = [list(shard(list(range(n)), r, world)) for r in range(world)]
            assert [x for p in parts for x in p] == list(range(n))
            padded = [even_shard(list(range(n)), r, world) for r in range(world)]
            assert len({len(p) for p, _ in padded}) == 1  # every process runs as many
            assert [x for p, real in padded for x in p[:real]] == list(range(n))
    order = list(range(10))
    assert micro_batch(order, 0, 2, 0, 2) + micro_batch(order, 0, 2, 1, 2) == [0, 1, 2, 3]
    assert micro_batch(order, 2, 2, 0, 2) == [8, 9] and micro_batch(order, 2, 2, 1, 2) == []  # no repeats
    assert micro_batch(order, 1, 4, 1, 2) == [] and micro_batch(order, 1, 4, 0, 2) == [8, 9]


def test_two_processes_match_one(files, tmp_path):
    data = ["--train", str(files / "train.jsonl"), "--valid", str(files / "valid.jsonl")]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["sft", "--out", str(one / "sft"), "--batch-size", "8", "--epochs", "2", *data, *SIZE, *COMMON]) == 0
    torchrun("sft", "--out", str(two / "sft"), "--batch-size", "4", "--epochs", "2", *data, *SIZE, *COMMON)
    assert losses(two / "sft") == pytest.approx(losses(one / "sft"), abs=1e-4)
    assert json.loads((two / "sft" / SUMMARY).read_text())["processes"] == 2

    sft = str(one / "sft" / "model")
    pref = ["--negatives", "3", "--model", sft, "--reference-cache", "none", *data, *COMMON]
    assert main(["sdpo", "--out", str(one / "sdpo"), "--batch-size", "8", *pref]) == 0
    torchrun("sdpo", "--out", str(two / "sdpo"), "--batch-size", "4", *pref)
    assert losses(two / "sdpo") == pytest.approx(losses(one / "sdpo"), abs=1e-4)
    evals = [json.loads(x)["hr@1"] for x in (two / "sdpo" / EVAL_LOG).read_text().splitlines()]
    assert evals == [json.loads(x)["hr@1"] for x in (one / "sdpo" / EVAL_LOG).read_text().splitlines()]

    for protocol in ("ranking", "generation"):
        ev = [
            "evaluate",
            "--model",
            sft,
            "--data",
            str(files / "valid.jsonl"),
            "--protocol",
            protocol,
            "--device",
            "cpu",
            "--no-progress",
        ]
        assert main([*ev, "--out", str(one / protocol)]) == 0
        torchrun(*ev, "--out", str(two / protocol))
        rows = [[json.loads(x) for x in (d / protocol / PREDICTIONS).read_text().splitlines()] for d in (one, two)]
        assert [r["key"] for r in rows[1]] == [r["key"] for r in rows[0]] and len(rows[1]) == 13
        m1, m2 = (read_evaluation_metrics(d / protocol) for d in (one, two))
        assert m2["processes"] == 2 and m2["n"] == 13
        assert {k: m2[k] for k in ("hr@1", "mrr", "valid_ratio")} == pytest.approx(
            {k: m1[k] for k in ("hr@1", "mrr", "valid_ratio")}, abs=1e-6, nan_ok=True
        )
