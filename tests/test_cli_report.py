"""`sdporec report` on the tiny pipeline run (`run_dir`, conftest.py): figures, comparisons of several runs, and
its errors."""

from conftest import TINY_BUILTIN

from sdporec.cli import main
from sdporec.runs import REPORT

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
            *TINY_BUILTIN,
            "--no-progress",
        ]
    )
    assert code == 2 and "pip install tensorboard" in capsys.readouterr().err
