"""The Python API: the README's example runs, `help(sdporec)` lists the public names, settings are checked
as the CLI checks them, and the recommender ranks as `sdporec recommend` does."""

import importlib
import inspect
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest

import sdporec
from sdporec.runs import read_evaluation_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_public_names():
    text = pydoc.render_doc(sdporec, renderer=pydoc.plaintext)
    for name in (
        "prepare",
        "sft",
        "dpo",
        "sdpo",
        "evaluate",
        "pipeline",
        "Recommender",
        "SFTConfig",
        "DPOConfig",
        "SDPOConfig",
        "EvaluateConfig",
        "PrepareConfig",
    ):
        assert name in sdporec.__all__ and name in text, name
    importlib.import_module("sdporec.cli")  # imports every submodule

    for name in ("prepare", "sft", "dpo", "sdpo", "evaluate", "pipeline"):
        assert inspect.isfunction(getattr(sdporec, name)), name  # not a submodule of the same name


def test_settings_are_checked_like_the_cli(tmp_path):
    with pytest.raises(sdporec.ConfigError, match="unknown setting.*epoch"):
        sdporec.sft(train="t.jsonl", out=str(tmp_path / "o"), epoch=3)
    with pytest.raises(sdporec.ConfigError, match="setting 'train'"):
        sdporec.sft(train=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "o"))
    with pytest.raises(sdporec.ConfigError, match="not both"):
        sdporec.sft(sdporec.SFTConfig(), epochs=2)
    assert not (tmp_path / "o").exists()


def test_the_readme_example_is_examples_quickstart_and_runs(tmp_path):
    """The README's Python example is examples/quickstart.py's code; the example runs end to end (about a
    minute on 2 cores)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    example = (ROOT / "examples" / "quickstart.py").read_text()
    assert block.strip() and block.strip() in example
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test HR@1:" in done.stdout and "the user's next item was:" in done.stdout
    metrics = read_evaluation_metrics(tmp_path / "runs" / "eval")
    assert 0 <= metrics["hr@1"] <= 1 and metrics["n"] > 0
