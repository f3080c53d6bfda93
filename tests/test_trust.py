"""Run and model folders made by someone else, full disks, killed and colliding runs: no code from a pickle or a
model's own files runs, a failed write leaves the earlier outputs whole, one writer per output folder, outputs
apart from inputs, and readers that expect what a kill leaves. Each error is one line naming the file."""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import crafted_pickle, crafted_torch_file

from sdporec.cli import main

SMALL = ["--hidden", "16", "--layers", "1", "--heads", "2", "--eval-samples", "8", "--no-progress"]
SFT = ["sft", "--train", "data/train.jsonl", "--valid", "data/valid.jsonl", *SMALL]
SRC = Path(__file__).resolve().parents[1] / "src"
# Unpickling calls: weights_only=False, pickle.load(s), and torch.load without weights_only=True.
UNPICKLING = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|torch\.load\((?![^)]*weights_only\s*=\s*True)")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Built-in data, a tiny SFT run with two checkpoints, and its evaluation."""
    root = tmp_path_factory.mktemp("trust")
    before = os.getcwd()
    os.chdir(root)
    assert main(["prepare", "builtin", "--out", "data", "--users", "40", "--items", "80", "--genres", "4"]) == 0
    assert main([*SFT, "--out", "run", "--epochs", "2"]) == 0
    assert (
        main(["evaluate", "--model", "run/model", "--data", "data/test.jsonl", "--out", "eval", "--no-progress"]) == 0
    )
    yield root
    os.chdir(before)


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("sdporec") and "warning" not in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def newest_checkpoint(run: str) -> Path:
    return sorted(Path(run, "checkpoints").glob("step-*"))[-1]


def snapshot(folder: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_no_source_file_unpickles():
    """What the library's own code may never do: unpickle (torch.load without weights_only, pickle.load)."""
    found = [
        f"{p}:{n}"
        for p in SRC.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if UNPICKLING.search(line)
    ]
    assert not found, found


# A crafted file in the newest checkpoint, under each name accelerate's pickled state had and ours has: none
# runs code; the state files we read refuse what is not theirs, naming the file.
@pytest.mark.parametrize(
    "name,refused",
    [
        ("optimizer.safetensors", True),
        ("trainable.safetensors", True),
        ("random_states_0.safetensors", True),
        ("scheduler.json", True),
        ("optimizer.bin", False),
        ("custom_checkpoint_0.pkl", False),
        ("random_states_0.pkl", False),
    ],
)
def test_a_crafted_checkpoint_file_runs_no_code(ws, capsys, name, refused):
    run = f"crafted-{name}"
    shutil.copytree("run", run)
    marker = Path(f"marker-{name}")
    target = newest_checkpoint(run) / name
    target.write_bytes(crafted_pickle(marker.resolve()))
    code = main([*SFT, "--out", run, "--epochs", "2", "--resume"])
    assert not marker.exists()
    if refused:
        assert code == 2
        one_line_error(capsys, str(target), "remove", "--overwrite")
    else:  # a stray pickle beside our own state is never opened
        assert code == 0, capsys.readouterr().err


def test_an_old_pickled_checkpoint_is_refused_unopened(ws, capsys):
    shutil.copytree("run", "old-format")
    ckpt = newest_checkpoint("old-format")
    for p in ckpt.glob("*.safetensors"):
        p.unlink()
    crafted_torch_file(Path("marker-old").resolve(), ckpt / "optimizer.bin")
    assert main([*SFT, "--out", "old-format", "--epochs", "2", "--resume"]) == 2
    one_line_error(capsys, "optimizer.bin", "pickle", "does not load them")
    assert not Path("marker-old").exists()


def test_a_crafted_pytorch_model_bin_is_refused_naming_it(ws, capsys):
    shutil.copytree("run/model", "bin-model")
    Path("bin-model/model.safetensors").unlink()
    crafted_torch_file(Path("marker-bin").resolve(), Path("bin-model/pytorch_model.bin"))
    assert main(["evaluate", "--model", "bin-model", "--data", "data/test.jsonl", "--out", "e-bin"]) == 2
    one_line_error(capsys, "pytorch_model.bin")
    assert not Path("marker-bin").exists() and not Path("e-bin/metrics.json").exists()


def test_a_model_with_its_own_code_is_refused_without_asking(ws, capsys, monkeypatch):
    """transformers may ask on the terminal whether to run a model's code: sdporec never asks, never runs it."""
    shutil.copytree("run/model", "remote")
    marker = Path("marker-remote").resolve()
    Path("remote/modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads(Path("remote/config.json").read_text())
    config.update(
        model_type="evil-model",
        auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"},
    )
    Path("remote/config.json").write_text(json.dumps(config))
    Path("remote/sdporec_checkpoint.json").unlink()  # someone else's model
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("sdporec asked on the terminal"))
    assert main(["evaluate", "--model", "remote", "--data", "data/test.jsonl", "--out", "e-remote"]) == 2
    one_line_error(capsys, "remote", "--trust-remote-code")
    assert not marker.exists()


def _limited(args: list[str], limit: int) -> subprocess.CompletedProcess:
    """`sdporec ARGS` in a child whose files may not grow past `limit` bytes (what a full disk does to a write)."""

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "sdporec", *args],
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_a_failed_write_leaves_the_earlier_evaluation_whole(ws):
    before = snapshot("eval")
    proc = _limited(
        [
            "evaluate",
            "--model",
            "run/model",
            "--data",
            "data/test.jsonl",
            "--out",
            "eval",
            "--overwrite",
            "--no-progress",
            "--limit",
            "30",
        ],
        limit=2000,
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "cannot write" in err[0] and "File too large" in err[0], err
    assert snapshot("eval") == before  # the three files of the earlier run, no temporary left


def test_a_failed_write_puts_the_earlier_training_run_back(ws):
    shutil.copytree("run", "full-disk")
    before = snapshot("full-disk")
    proc = _limited([*SFT, "--out", "full-disk", "--epochs", "1", "--overwrite", "--seed", "5"], limit=20000)
    err = [line for line in proc.stderr.strip().splitlines() if "warning" not in line]
    assert proc.returncode == 2 and len(err) == 1 and "cannot write" in err[0] and "full-disk" in err[0], proc.stderr
    assert "back in place" in proc.stderr
    assert snapshot("full-disk") == before and not Path("full-disk/.replaced").exists()


def test_a_second_writer_is_refused_and_a_killed_ones_lock_does_not_block(ws, capsys):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdporec", *SFT, "--out", "busy", "--epochs", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not Path("busy/config.yaml").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the first run ended before the second started"
        assert main([*SFT, "--out", "busy", "--epochs", "1", "--overwrite"]) == 2
        one_line_error(capsys, "busy", "another sdporec process", f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    assert main([*SFT, "--out", "busy", "--epochs", "1", "--overwrite"]) == 0
    assert not Path(".busy.lock").exists()


@pytest.mark.parametrize(
    "args,setting",
    [
        (["compare", "eval", "run", "--out", "eval/predictions.jsonl"], "'out'"),
        (["report", "run", "--out", "run/report"], "'out'"),
        (["evaluate", "--model", "run/model", "--data", "data/test.jsonl", "--out", "run/model/eval"], "'out'"),
        (["export", "--model", "run/model", "--out", "run/model/exported"], "'out'"),
        (
            ["baseline", "popularity", "--train", "data/train.jsonl", "--eval", "data/test.jsonl", "--out", "data"],
            "'out'",
        ),
        (["audit", "data/test.jsonl", "--out", "data/test.jsonl"], "'out'"),
        (["prepare", "movielens-100k", "--raw", "data", "--out", "data/ml"], "'out'"),
        (["dpo", "--model", "run/model", "--train", "data/train.jsonl", "--out", "run", "--overwrite"], "'out'"),
    ],
)
def test_an_output_apart_from_its_inputs(ws, capsys, args, setting):
    before = {d: snapshot(d) for d in ("eval", "run", "data")}
    assert main(args) == 2
    one_line_error(capsys, f"setting {setting}", "input")
    assert {d: snapshot(d) for d in ("eval", "run", "data")} == before


def test_report_leaves_out_a_log_line_cut_short(ws, capsys):
    shutil.copytree("run", "cut")
    with open("cut/train_log.jsonl", "a") as f:
        f.write('{"step": 99, "lo')
    assert main(["report", "cut", "--out", "cut-report"]) == 0
    err = capsys.readouterr().err
    assert "cut/train_log.jsonl" in err and "cut short" in err
    assert Path("cut-report/report.md").is_file()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "-1", "1.5", '"2"'])
def test_compare_refuses_a_rank_that_is_not_a_whole_number_from_0(ws, capsys, value):
    lines = Path("eval/predictions.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    lines[2] = json.dumps(row).replace(f'"rank": {row["rank"]}', f'"rank": {value}')
    Path(f"bad-{value}").mkdir()
    Path(f"bad-{value}/predictions.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["compare", "eval", f"bad-{value}"]) == 2
    one_line_error(capsys, f"bad-{value}/predictions.jsonl", "line 3")


def test_a_yaml_alias_bomb_is_refused_at_once(ws, capsys):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    Path("bomb.yaml").write_text("\n".join(lines).replace("a8: &a8", "names:") + "\n")
    started = time.time()
    assert main(["compare", "eval", "eval", "--config", "bomb.yaml"]) == 2
    assert time.time() - started < 10
    one_line_error(capsys, "bomb.yaml", "line 2", "aliases")


def test_a_long_setting_is_cut_short_in_its_message(ws, capsys):
    Path("long.yaml").write_text("names: [[" + ", ".join(["12345"] * 100_000) + "]]\n")
    assert main(["compare", "eval", "eval", "--config", "long.yaml"]) == 2
    assert len(one_line_error(capsys, "setting 'names'")) < 400


def test_a_title_with_a_line_break_is_refused_at_prepare(ws, capsys):
    Path("items.csv").write_text('item,title\n1,"Two\nLines"\n' + "".join(f"{i},T{i}\n" for i in range(2, 40)))
    Path("log.csv").write_text(
        "user,item,timestamp\n" + "".join(f"u{u},{i},{i}\n" for u in range(9) for i in range(1, 40))
    )
    assert main(["prepare", "csv", "--interactions", "log.csv", "--items-file", "items.csv", "--out", "p-csv"]) == 2
    one_line_error(capsys, "items.csv", "field 'title'", "line break", "'Two\\nLines'")
    assert not Path("p-csv/items.txt").exists()


def test_a_run_that_stops_after_a_checkpoint_keeps_it(ws, capsys, monkeypatch):
    """--overwrite puts the earlier run back only while the new one has nothing to resume from; after its first
    checkpoint the new run stays (for --resume) and the earlier one waits in OUT/.replaced. A run into a new
    folder that stops keeps what it wrote."""
    from sdporec.training.trainer import Trainer

    def stop(self, started):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "finish", stop)  # after the last epoch's checkpoint, before the summary
    assert main([*SFT, "--out", "fresh", "--epochs", "1", "--overwrite"]) == 130
    assert list(Path("fresh/checkpoints").glob("step-*")) and Path("fresh/config.yaml").is_file()

    shutil.copytree("run", "stopped")
    before = snapshot("stopped")
    assert main([*SFT, "--out", "stopped", "--epochs", "1", "--overwrite", "--seed", "4"]) == 130
    assert "continue it with --resume" in capsys.readouterr().err
    assert snapshot("stopped/.replaced") == before and "seed: 4" in Path("stopped/config.yaml").read_text()
    monkeypatch.undo()
    assert main([*SFT, "--out", "stopped", "--epochs", "1", "--seed", "4", "--resume"]) == 0
    assert Path("stopped/summary.json").is_file() and not Path("stopped/.replaced").exists()


def test_a_command_of_one_process_refuses_several(ws, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "eval", "eval"]) == 2
    one_line_error(capsys, "compare runs in one process", "torchrun")


def test_an_output_in_a_read_only_parent_is_locked_inside_it(tmp_path, monkeypatch):
    from sdporec.errors import BusyError, OutputError
    from sdporec.outputs import OutputLock

    real_open = os.open

    def read_only_parent(path, *args, **kwargs):
        if Path(path).name == ".out.lock":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_parent)
    with OutputLock(tmp_path / "out") as lock:
        assert lock.path == tmp_path / "out" / ".sdporec.lock"
        with pytest.raises(BusyError, match=f"pid {os.getpid()}"), OutputLock(tmp_path / "out"):
            pass
    assert not (tmp_path / "out" / ".sdporec.lock").exists()
    (tmp_path / "out.json").write_text("{}")  # a file cannot hold its own lock: the failure is named
    monkeypatch.setattr(
        os, "open", lambda path, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
    )
    with pytest.raises(OutputError, match="out.json.lock: Permission denied"), OutputLock(tmp_path / "out.json"):
        pass
