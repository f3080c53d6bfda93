"""The history's next-title loss (its own sequences, or inside the prompt) and the history readout that validation
chooses with the checkpoint."""

import json

import pytest
from test_training_options import SIZE, TINY

from sdporec.cli import main
from sdporec.runs import CONFIG, EVAL_LOG, TRAIN_LOG, read_evaluation_metrics


def test_history_sequences_label_every_title_after_the_first(tiny_llama):
    from sdporec.models.logprobs import IGNORE

    _, codec = tiny_llama
    ids, labels = codec.encode_history(["Artist 1", "Air", "Air Supply"], IGNORE)
    t = codec.title_id
    assert ids == [codec.bos_id, t("Artist 1"), t("Air"), t("Air Supply")]
    assert labels == [IGNORE, IGNORE, t("Air"), t("Air Supply")]


def test_history_loss_trains_and_is_reported(small_splits, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "h"), "--history-weight", "0.5", *small_splits, *SIZE, *TINY]) == 0
    rows = [json.loads(x) for x in (tmp_path / "h" / TRAIN_LOG).read_text().splitlines()]
    assert all("answer_loss" in r and r["loss"] > 0 for r in rows)
    # The logged loss is (answer loss + 0.5 x history loss) over answer and history tokens: with the history
    # term it differs from the answer loss per answer token.
    assert main(["sft", "--out", str(tmp_path / "a"), *small_splits, *SIZE, *TINY]) == 0
    plain = [json.loads(x)["loss"] for x in (tmp_path / "a" / TRAIN_LOG).read_text().splitlines()]
    assert plain[0] != pytest.approx(rows[0]["loss"])


def test_history_labels_inside_the_prompt_are_the_later_history_titles(tiny_llama):
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import IGNORE

    _, codec = tiny_llama
    history, candidates = ["Artist 1", "Air", "Air Supply"], ["Artist 5", "Answer", "Artist 7"]
    for template in range(4):
        prompt = build_prompt(history, candidates, "music", template)
        ids, labels = codec.encode_prompt_history(prompt, IGNORE)
        assert ids == codec.encode_prompt(prompt) and len(labels) == len(ids)
        t = codec.title_id
        assert [label for label in labels if label != IGNORE] == [t("Air"), t("Air Supply")]
        assert all(label in (IGNORE, i) for i, label in zip(ids, labels))
        assert ids.index(t("Air")) + 1 == ids.index(t("Air Supply"))  # titles adjacent: separators have no token


def test_history_loss_inside_the_prompt_trains_and_needs_a_weight(small_splits, tmp_path):
    out = tmp_path / "p"
    assert (
        main(
            ["sft", "--out", str(out), "--history-weight", "0.5", "--history-in", "prompt", *small_splits, *SIZE, *TINY]
        )
        == 0
    )
    rows = [json.loads(x) for x in (out / TRAIN_LOG).read_text().splitlines()]
    assert all(r["loss"] > 0 and r["answer_loss"] > 0 for r in rows)
    assert "history_in: prompt" in (out / CONFIG).read_text()
    assert main(["sft", "--out", str(tmp_path / "q"), "--history-in", "prompt", *small_splits, *SIZE, *TINY]) == 2


def test_validation_chooses_the_history_readout_with_the_checkpoint_and_evaluate_uses_it(
    small_splits, tmp_path, capsys
):
    from sdporec.models.checkpoints import Checkpoint

    out = tmp_path / "h"
    assert (
        main(["sft", "--out", str(out), "--history-weight", "1", "--epochs", "2", *small_splits, *SIZE, *TINY[2:]]) == 0
    )
    evals = [json.loads(x) for x in (out / EVAL_LOG).read_text().splitlines()]
    for row in evals:  # every default weight tried; the row's HR@1 is the best of them, the smaller λ on ties
        by = row["hr@1_by_readout"]
        assert list(by) == ["0", "0.25", "0.5", "0.75", "1"]
        assert row["hr@1"] == max(by.values()) and by[f"{row['history_readout']:g}"] == row["hr@1"]
        assert row["history_readout"] == min(float(w) for w, v in by.items() if v == row["hr@1"])
    best = [r for r in evals if r["best"]][-1]
    meta = Checkpoint.read(out / "model").meta
    assert meta["history_readout"] == best["history_readout"] and meta["learned_history"] is True
    data = small_splits[3]  # the validation file: evaluate at the recorded λ matches training's number
    assert (
        main(["evaluate", "--model", str(out / "model"), "--data", data, "--out", str(tmp_path / "e"), "--no-progress"])
        == 0
    )
    assert "recorded in" in capsys.readouterr().err or best["history_readout"] == 0
    recorded = read_evaluation_metrics(tmp_path / "e")
    assert recorded["history_readout"] == best["history_readout"] and recorded["hr@1"] == pytest.approx(best["hr@1"])
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out / "model"),
                "--data",
                data,
                "--out",
                str(tmp_path / "p"),
                "--history-readout",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    prompt = read_evaluation_metrics(tmp_path / "p")
    assert prompt["history_readout"] == 0 and prompt["hr@1"] == pytest.approx(best["hr@1_by_readout"]["0"])
    # DPO from it tries the weights too (its SFT learned the history); an answer-only SFT tries the prompt alone.
    assert (
        main(
            [
                "dpo",
                "--model",
                str(out / "model"),
                "--out",
                str(tmp_path / "d"),
                "--reference-cache",
                "none",
                *small_splits,
                *TINY,
            ]
        )
        == 0
    )
    assert "hr@1_by_readout" in (tmp_path / "d" / EVAL_LOG).read_text()
    assert Checkpoint.read(tmp_path / "d" / "model").meta["learned_history"] is True
    assert main(["sft", "--out", str(tmp_path / "a"), *small_splits, *SIZE, *TINY]) == 0
    assert "hr@1_by_readout" not in (tmp_path / "a" / EVAL_LOG).read_text()
    assert Checkpoint.read(tmp_path / "a" / "model").meta["history_readout"] == 0


def test_history_readout_weights_are_checked(small_splits, tmp_path, capsys):
    for bad, said in (
        (["--history-readouts", "0", "1.5"], "each must be in [0, 1]"),
        (["--history-readouts", "0", "0.5", "--valid", ""], "needs validation data"),
    ):
        assert main(["sft", "--out", str(tmp_path / "x"), *small_splits, *bad, *SIZE, *TINY]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "x").exists()
