import argparse

import pytest
import yaml

from sdporec.cli import COMMANDS, build_parser
from sdporec.commands.preference import DPOConfig, PreferenceConfig, SDPOConfig
from sdporec.commands.prepare import PrepareConfig
from sdporec.commands.settings import from_arguments
from sdporec.commands.sft import SFTConfig
from sdporec.config import save_config
from sdporec.errors import ConfigError
from sdporec.runs import CONFIG


def parse(argv):
    return build_parser().parse_args(argv)


def test_flags_come_from_the_dataclass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text("[]")
    args = parse(
        [
            "dpo",
            "--train",
            "t.json",
            "--out",
            "o",
            "--model",
            "m",
            "--loss",
            "dpo",
            "--negatives",
            "1",
            "--beta",
            "0.5",
            "--no-progress",
        ]
    )
    cfg = from_arguments(PreferenceConfig, args)
    assert (cfg.loss, cfg.negatives, cfg.beta, cfg.progress, cfg.epochs) == ("dpo", 1, 0.5, False, 1)


def test_dpo_runs_dpo_and_sdpo_is_asked_for_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text("[]")
    common = ["--train", "t.json", "--out", "o", "--model", "m"]
    dpo, sdpo = from_arguments(DPOConfig, parse(["dpo", *common])), from_arguments(SDPOConfig, parse(["sdpo", *common]))
    assert (dpo.loss, dpo.negatives) == ("dpo", 1)
    assert (sdpo.loss, sdpo.negatives) == ("sdpo", 3)
    # The old spelling of S-DPO keeps working.
    old = from_arguments(DPOConfig, parse(["dpo", *common, "--loss", "sdpo", "--negatives", "3"]))
    assert (old.loss, old.negatives) == ("sdpo", 3)


def test_yaml_then_flags_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text("[]")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": "a.json", "out": "o", "epochs": 7, "lr": 0.01}))
    cfg = from_arguments(SFTConfig, parse(["sft", "--config", str(f), "--epochs", "2"]))
    assert cfg.epochs == 2 and cfg.lr == 0.01 and cfg.train == "a.json"
    save_config(cfg, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / CONFIG).read_text())
    assert saved["epochs"] == 2 and saved["lr"] == 0.01 and saved["model"] == "builtin"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": "a", "out": "o", "epoch": 3}, "unknown setting"),
        ({"train": "a", "out": "o", "epochs": "three"}, "setting 'epochs': expected int"),
        ({"train": "a", "out": "o", "epochs": 0}, "setting 'epochs': must be at least 1"),
        ({"train": "a", "out": "o", "domain": "podcasts"}, "setting 'domain'"),
        ({"out": "o"}, "setting 'train': required"),
    ],
)
def test_bad_configs_name_the_setting(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").write_text("[]")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=message):
        from_arguments(SFTConfig, parse(["sft", "--config", str(f)]))


def test_bad_flag_values_are_rejected_by_argparse():
    with pytest.raises(SystemExit):
        parse(["dpo", "--loss", "ipo"])
    assert isinstance(parse(["evaluate", "--protocol", "generation"]), argparse.Namespace)


def test_an_omitted_positional_with_choices_takes_its_default_or_the_yaml_value(capsys):
    # Before Python 3.12 argparse checked the omitted positional's SUPPRESS default against its choices and
    # refused `sdporec prepare --out DIR`; sdporec.commands.settings.OneOf checks the choices instead.
    assert from_arguments(PrepareConfig, parse(["prepare", "--out", "d"])).source == "builtin"
    assert parse(["prepare", "csv", "--out", "d"]).source == "csv"
    assert "source" not in vars(parse(["prepare", "--config", "p.yaml"]))  # so a YAML file's source stands
    with pytest.raises(SystemExit):
        parse(["prepare", "bogus"])
    assert "argument source: invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_each_default_once_and_none_for_empty_values(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare the words
    assert "(default: )" not in text and "(default: [])" not in text and "(default: None)" not in text
    for flag in text.split(" --")[1:]:
        assert flag.count("(default:") <= 1, flag
    if command == "sft":
        assert "--epochs EPOCHS passes over the training samples (default: 3) " in text
        assert "--train TRAIN training samples: the paper's JSON array or JSON Lines --" in text


@pytest.mark.parametrize(
    "protocol, configs",
    [
        ("sdporec.training.train_config:TrainOptions", (SFTConfig, DPOConfig, SDPOConfig)),
        ("sdporec.training.sft:SFTOptions", (SFTConfig,)),
        ("sdporec.training.preference:PreferenceOptions", (PreferenceConfig, DPOConfig, SDPOConfig)),
    ],
)
def test_the_library_reads_settings_the_commands_configs_have(protocol, configs):
    """The trainer and recipes are typed on protocols so that the library never imports the commands; each
    protocol's every setting must be a field of the command configs that are passed in, with the same type
    (nothing else checks it: no static type checker runs in `make test`)."""
    import dataclasses
    import importlib
    import typing

    module, name = protocol.split(":")
    wanted = typing.get_type_hints(getattr(importlib.import_module(module), name))
    assert len(wanted) > 8
    for cls in configs:
        fields = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        assert set(wanted) <= fields, f"{cls.__name__} lacks {sorted(set(wanted) - fields)}"
        assert {k: hints[k] for k in wanted} == wanted
