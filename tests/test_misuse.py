"""Bad input and misuse through the CLI: one line naming what is wrong, exit status 2, no traceback, and
nothing an earlier command wrote is lost."""

import json
import os
import shutil
from pathlib import Path

import pytest

from sdporec.cli import main
from sdporec.errors import DataError
from sdporec.runs import TRAINER_STATE


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: built-in data, a tiny SFT run, and bad files of many kinds."""
    root = tmp_path_factory.mktemp("misuse")
    before = os.getcwd()
    os.chdir(root)
    assert main(["prepare", "builtin", "--out", "data", "--users", "40", "--items", "80", "--genres", "4"]) == 0
    assert (
        main(
            [
                "sft",
                "--train",
                "data/train.jsonl",
                "--valid",
                "data/valid.jsonl",
                "--out",
                "run",
                "--hidden",
                "16",
                "--layers",
                "1",
                "--heads",
                "2",
                "--epochs",
                "1",
                "--eval-samples",
                "8",
                "--no-progress",
            ]
        )
        == 0
    )
    good = [json.loads(x) for x in Path("data/test.jsonl").read_text().splitlines()[:4]]
    text = "".join(json.dumps(r) + "\n" for r in good)
    Path("utf16.jsonl").write_bytes(text.encode("utf-16"))
    Path("bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode())
    Path("binary.jsonl").write_bytes(bytes(range(256)) * 4)
    Path("latin1.jsonl").write_bytes(text.replace(good[0]["historyList"][0], "Mis\u00e9rables").encode("latin-1"))
    unknown = dict(good[0], historyList=good[0]["historyList"] + ["A Title Nobody Trained On"])
    Path("unknown.jsonl").write_text(text + json.dumps(unknown) + "\n")
    two = {
        "historyList": good[0]["historyList"],
        "trueSelection": good[0]["trueSelection"],
        "itemList": [good[0]["trueSelection"], next(c for c in good[0]["itemList"] if c != good[0]["trueSelection"])],
    }
    Path("two.jsonl").write_text(json.dumps(two) + "\n")
    # Negatives taken from the history: legal in a file, but no list of 3 can be re-drawn outside the history.
    h = good[0]["historyList"]
    Path("overlap.jsonl").write_text(
        json.dumps(
            {
                "historyList": h,
                "itemList": [good[0]["trueSelection"], *h[:2]],
                "trueSelection": good[0]["trueSelection"],
            }
        )
        + "\n"
    )
    Path("notes.txt").write_text("my notes\n")
    Path("empty_dir").mkdir()
    Path("bad.yaml").write_text("epochs: [1, 2\n")
    Path("fake.gguf").write_bytes(b"not a gguf file")
    Path("null.yaml").write_text("epochs: null\ntrain: data/train.jsonl\nout: n1\n")
    shutil.copytree("run/model", "damaged_meta")
    Path("damaged_meta/sdporec_checkpoint.json").write_text("{cut sho")
    yield root
    os.chdir(before)


CASES = [
    # (arguments, fragments the one-line error must hold)
    (
        ["evaluate", "--model", "run/model", "--data", "binary.jsonl", "--out", "e1"],
        ["binary.jsonl", "line 2", "0x80", "UTF-8"],
    ),
    (
        ["evaluate", "--model", "run/model", "--data", "latin1.jsonl", "--out", "e1"],
        ["latin1.jsonl", "line 1", "byte 0xe9"],
    ),
    (
        ["evaluate", "--model", "run/model", "--data", "unknown.jsonl", "--out", "e1"],
        ["unknown.jsonl", "line 5", "'historyList'", "A Title Nobody Trained On"],
    ),
    (["evaluate", "--model", "run/model", "--data", "empty_dir", "--out", "e1"], ["setting 'data'", "directory"]),
    (
        ["evaluate", "--model", "nowhere/at/all", "--data", "bom.json", "--out", "e1"],
        ["setting 'model'", "does not exist"],
    ),
    (
        ["evaluate", "--model", "run", "--data", "bom.json", "--out", "e1"],
        ["setting 'model'", "did you mean run/model"],
    ),
    (["evaluate", "--model", "empty_dir", "--data", "bom.json", "--out", "e1"], ["setting 'model'", "no config.json"]),
    (
        ["evaluate", "--model", "notes.txt", "--data", "bom.json", "--out", "e1"],
        ["setting 'model'", "notes.txt is a file"],
    ),
    (["evaluate", "--model", "fake.gguf", "--data", "bom.json", "--out", "e1"], ["setting 'model'", "GGUF header"]),
    (["evaluate", "--model", "run/model", "--data", "bom.json", "--out", "notes.txt"], ["setting 'out'", "is a file"]),
    (
        ["evaluate", "--model", "run/model", "--data", "bom.json", "--out", "e1", "--device", "gpu"],
        ["setting 'device'"],
    ),
    (["evaluate", "--config", "bad.yaml", "--model", "run/model"], ["bad.yaml", "line 2", "YAML"]),
    (["evaluate", "--config", "missing.yaml"], ["missing.yaml", "no such file"]),
    (
        ["recommend", "--model", "run/model", "--history", "Nobody Knows", "--candidates", "x", "y"],
        ["command line", "'historyList'", "Nobody Knows"],
    ),
    (["recommend", "--model", "run/model", "--input", "binary.jsonl"], ["binary.jsonl", "UTF-8"]),
    (
        ["dpo", "--model", "run/model", "--train", "data/train.jsonl", "--out", "d1", "--negatives", "25"],
        ["data/train.jsonl", "line 1", "'itemList'", "25 negatives"],
    ),
    (
        ["sdpo", "--model", "run/model", "--train", "two.jsonl", "--out", "d1", "--keep-candidates"],
        ["two.jsonl", "line 1", "'itemList'", "3 negatives"],
    ),
    (
        ["dpo", "--model", "run/model", "--train", "overlap.jsonl", "--out", "d1"],
        ["overlap.jsonl", "line 1", "--keep-candidates"],
    ),
    (
        [
            "dpo",
            "--model",
            "run/model",
            "--train",
            "unknown.jsonl",
            "--out",
            "d1",
            "--keep-candidates",
            "--negatives",
            "1",
        ],
        ["unknown.jsonl", "line 5", "A Title Nobody Trained On"],
    ),
    (["sft", "--train", "data/train.jsonl", "--out", "notes.txt"], ["setting 'out'", "is a file"]),
    (["sft", "--train", "data/train.jsonl", "--out", "run"], ["setting 'out'", "--resume", "--overwrite"]),
    (["sft", "--train", "data/train.jsonl", "--out", "run", "--resume", "--overwrite"], ["setting 'overwrite'"]),
    (["sft", "--train", "data/train.jsonl", "--out", "s1", "--titles", "binary.jsonl"], ["binary.jsonl", "UTF-8"]),
    (  # set-up fails while resuming: the run being resumed keeps every file as it was
        [
            "sft",
            "--train",
            "data/train.jsonl",
            "--valid",
            "data/valid.jsonl",
            "--out",
            "run",
            "--resume",
            "--hidden",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--epochs",
            "2",
            "--lora",
            "--lora-targets",
            "qkv",
        ],
        ["setting 'lora_targets'", "qkv"],
    ),
    (["sft", "--train", "data/train.jsonl", "--out", "s1", "--threads", "-2"], ["setting 'threads'"]),
    (
        [
            "sft",
            "--train",
            "data/train.jsonl",
            "--out",
            "s1",
            "--model",
            "run/model",
            "--lora",
            "--lora-targets",
            "qkv",
        ],
        ["setting 'lora_targets'", "qkv", "q_proj"],
    ),
    (
        ["prepare", "csv", "--interactions", "notes.txt", "--items-file", "latin1.jsonl", "--out", "p1"],
        ["latin1.jsonl", "UTF-8"],
    ),
    (["prepare", "builtin", "--out", "data"], ["setting 'out'", "--overwrite"]),
    (
        [
            "prepare",
            "movielens-100k",
            "--raw",
            "raw",
            "--download",
            "--url",
            "file:///no/such/ml-100k.zip",
            "--out",
            "p2",
        ],
        ["ml-100k.zip", "cannot download"],
    ),
    (["export", "--model", "run/model", "--out", "data"], ["setting 'out'", "not an sdporec checkpoint"]),
    (["baseline", "popularity", "--train", "binary.jsonl", "--eval", "bom.json", "--out", "b1"], ["binary.jsonl"]),
    (["audit", "utf16.jsonl", "--out", "empty_dir"], ["setting 'out'", "directory"]),
    (["pipeline", "--out", "notes.txt"], ["setting 'out'", "is a file"]),
    (["pipeline", "--out", "pl", "--items", "20"], ["setting 'items'", "at least 30"]),
    (["sft", "--config", "null.yaml"], ["setting 'epochs'", "got null"]),
    (
        [
            "sft",
            "--train",
            "data/train.jsonl",
            "--out",
            "s2",
            "--lr",
            "1e12",
            "--hidden",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
        ],
        ["training loss is nan", "optimizer step 2"],
    ),
    (["pipeline", "--out", "pl", "--negatives", "20"], ["setting 'negatives'", "19"]),
    (["pipeline", "--out", "pl", "--dropout", "1"], ["setting 'dropout'", "[0, 1)"]),
    (
        ["sft", "--train", "data/train.jsonl", "--out", "s3", "--history-readouts", "0", "0.5"],
        ["setting 'history_readouts'", "needs validation data"],
    ),
    (["prepare", "builtin", "--out", "p3", "--kcore", "1000"], ["setting 'kcore'", "no samples"]),
    (["prepare", "builtin", "--out", "p3", "--candidates", "400"], ["setting 'items'", "410"]),
    (
        ["evaluate", "--model", "damaged_meta", "--data", "bom.json", "--out", "e1"],
        ["damaged_meta/sdporec_checkpoint.json", "not valid JSON"],
    ),
    (
        ["dpo", "--model", "damaged_meta", "--train", "data/train.jsonl", "--out", "d1"],
        ["damaged_meta/sdporec_checkpoint.json"],
    ),
]


STOPPED_WHILE_TRAINING = {"s2"}  # the --out of cases that fail after training has begun


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,fragments", CASES, ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_misuse_ends_in_one_line_that_names_the_problem(ws, capsys, args, fragments):
    before = _snapshot(ws)
    capsys.readouterr()
    code = main(args + ["--no-progress"] if args[0] in ("evaluate", "dpo", "sdpo", "sft") else args)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("sdporec ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    after = _snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing written was lost or changed
    # A run that fails before training leaves nothing; one stopped while training (a NaN loss) keeps its log.
    out = args[args.index("--out") + 1] if "--out" in args else None
    new = sorted(k for k in after if k not in before)
    assert not new or (out in STOPPED_WHILE_TRAINING and all(k.startswith(out + "/") for k in new)), new


def test_utf16_and_byte_order_marks_are_read(ws, capsys):
    for name in ("utf16.jsonl", "bom.json"):
        assert main(["evaluate", "--model", "run/model", "--data", name, "--out", f"ok-{name}", "--no-progress"]) == 0
        assert json.loads(Path(f"ok-{name}/metrics.json").read_text())["n"] == 4


def test_debug_shows_the_traceback(ws):
    with pytest.raises(DataError):
        main(["evaluate", "--model", "run/model", "--data", "binary.jsonl", "--out", "e1", "--debug"])


def test_an_unexpected_error_is_one_line_too(ws, capsys, monkeypatch):
    import sdporec.cli

    def broken(cfg):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(sdporec.cli.COMMANDS, "audit", (sdporec.cli.COMMANDS["audit"][0], broken, ""))
    assert main(["audit", "bom.json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" in err[0] and "ZeroDivisionError" in err[0] and "--debug" in err[0]


def test_overwrite_replaces_an_earlier_run_and_resume_continues_it(ws, capsys):
    stale = Path("run/checkpoints/step-99999999")
    stale.mkdir()
    args = [
        "sft",
        "--train",
        "data/train.jsonl",
        "--out",
        "run",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--epochs",
        "1",
        "--eval-samples",
        "8",
        "--no-progress",
        "--seed",
        "3",
    ]
    assert main(args + ["--overwrite"]) == 0
    assert not stale.exists() and "seed: 3" in Path("run/config.yaml").read_text()
    assert main(args + ["--epochs", "2", "--resume"]) == 2  # the epochs differ: refused, named
    assert "epochs" in capsys.readouterr().err
    shutil.rmtree("e1", ignore_errors=True)


def _edit_weights(src: str, dst: str, edit) -> None:
    """A copy of checkpoint `src` at `dst` whose safetensors tensors pass through `edit(dict)`."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    name = "adapter_model.safetensors" if Path(dst, "adapter_model.safetensors").is_file() else "model.safetensors"
    tensors = load_file(Path(dst) / name)
    save_file(edit(tensors), Path(dst) / name, metadata={"format": "pt"})


def test_nan_scores_are_an_error_naming_the_sample(ws, capsys):
    def poison(t):
        t["model.norm.weight"][:] = float("nan")
        return t

    _edit_weights("run/model", "nan_model", poison)
    capsys.readouterr()
    assert main(["evaluate", "--model", "nan_model", "--data", "bom.json", "--out", "nan_eval", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sample eval:0 (row 0 of its file)" in err and "score nan" in err and "Traceback" not in err
    assert not Path("nan_eval/metrics.json").exists()
    sample = json.loads(Path("data/test.jsonl").read_text().splitlines()[0])
    assert (
        main(
            [
                "recommend",
                "--model",
                "nan_model",
                "--history",
                *sample["historyList"],
                "--candidates",
                *sample["itemList"],
            ]
        )
        == 2
    )
    assert "score nan" in capsys.readouterr().err


def test_missing_weights_of_our_checkpoint_are_an_error_and_of_others_a_warning(ws, capsys):
    def drop(t):
        return {k: v for k, v in t.items() if k != "model.norm.weight"}

    _edit_weights("run/model", "partial", drop)
    capsys.readouterr()
    assert main(["evaluate", "--model", "partial", "--data", "bom.json", "--out", "partial_eval", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not load whole" in err and "model.norm.weight" in err and "randomly initialised" in err
    Path("partial/sdporec_checkpoint.json").unlink()  # no longer ours: a foreign model, loaded with a warning
    assert main(["evaluate", "--model", "partial", "--data", "bom.json", "--out", "partial_eval", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "model.norm.weight" in err


def test_missing_adapter_weights_are_an_error(ws, capsys):
    assert (
        main(
            [
                "sft",
                "--model",
                "run/model",
                "--lora",
                "--lora-r",
                "2",
                "--train",
                "data/train.jsonl",
                "--out",
                "lora",
                "--epochs",
                "1",
                "--eval-samples",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )

    def first(t):
        return {k: v for i, (k, v) in enumerate(sorted(t.items())) if i > 0}

    _edit_weights("lora/model", "lora_partial", first)
    capsys.readouterr()
    assert main(["evaluate", "--model", "lora_partial", "--data", "bom.json", "--out", "lp", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not load whole" in err and "lora_" in err


def test_an_unreadable_checkpoint_state_is_named_on_resume(ws, capsys):
    shutil.copytree("run", "run_copy")
    state = next(Path("run_copy/checkpoints").glob("step-*")) / TRAINER_STATE
    state.write_text('{"epoch": 1, "mic')
    capsys.readouterr()
    assert main(["sft", "--train", "data/train.jsonl", "--out", "run_copy", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(state) in err and "unreadable" in err and "Traceback" not in err
