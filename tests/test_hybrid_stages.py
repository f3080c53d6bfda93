"""Every stage on item tokens through the CLI (tiny random Llama): SFT with LoRA and all weights, DPO / S-DPO,
both protocols, `recommend`, `export`, resume, `pipeline`, and the one-line errors. The codec and the scoring
themselves: test_hybrid.py."""

import json

import pytest
import torch
from conftest import ranked

from sdporec.cli import main
from sdporec.data.hybrid import item_token
from sdporec.runs import METRICS, PREDICTIONS, SUMMARY, read_evaluation_metrics, read_pipeline_metrics

CLI_FAST = ["--epochs", "1", "--batch-size", "8", "--eval-samples", "4", "--no-progress"]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_every_stage_on_item_tokens_through_the_cli(tiny_text_model, tmp_path, capsys, lora):
    d, _ = tiny_text_model
    data = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    extra = ["--lora"] if lora else []
    assert (
        main(
            [
                "sft",
                "--model",
                str(d / "model"),
                "--item-tokens",
                "--out",
                str(tmp_path / "sft"),
                *data,
                *CLI_FAST,
                *extra,
            ]
        )
        == 0
    )
    sft = tmp_path / "sft" / "model"
    record = json.loads((sft / "sdporec_codec.json").read_text())
    assert record["kind"] == "hybrid" and len(record["items"]) == 60
    if lora:  # the adapter trains the item rows, and its base (with those rows) travels with it
        adapter = json.loads((sft / "adapter_config.json").read_text())
        assert len(adapter["trainable_token_indices"]) == 60 and (sft / "base" / "config.json").is_file()
    assert main(["sdpo", "--model", str(sft), "--out", str(tmp_path / "sdpo"), *data, *CLI_FAST]) == 0
    if not lora:  # a new adapter over the full SFT model trains the item rows too; its reference is the SFT model
        assert (
            main(["sdpo", "--model", str(sft), "--lora", "--out", str(tmp_path / "sdpo-lora"), *data, *CLI_FAST]) == 0
        )
        adapter = json.loads((tmp_path / "sdpo-lora" / "model" / "adapter_config.json").read_text())
        assert len(adapter["trainable_token_indices"]) == 60
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(tmp_path / "sdpo-lora" / "model"),
                    "--data",
                    str(d / "valid.jsonl"),
                    "--no-progress",
                    "--out",
                    str(tmp_path / "rank-lora"),
                ]
            )
            == 0
        )
    model = str(tmp_path / "sdpo" / "model")
    assert json.loads((tmp_path / "sdpo" / "model" / "sdporec_codec.json").read_text()) == record
    evaluate = ["evaluate", "--model", model, "--data", str(d / "valid.jsonl"), "--no-progress"]
    assert main([*evaluate, "--out", str(tmp_path / "rank")]) == 0
    assert main([*evaluate, "--out", str(tmp_path / "rank-paper"), "--layout", "paper"]) == 0
    first = ranked(tmp_path / "rank" / PREDICTIONS)
    paper = ranked(tmp_path / "rank-paper" / PREDICTIONS)
    for key, rows in first.items():
        assert dict(paper[key]) == pytest.approx(dict(rows), abs=1e-4)
    assert main([*evaluate, "--protocol", "generation", "--out", str(tmp_path / "gen")]) == 0
    gen = [json.loads(line) for line in open(tmp_path / "gen" / PREDICTIONS)]
    metrics = read_evaluation_metrics(tmp_path / "gen")
    for r, line in zip(gen, open(d / "valid.jsonl")):
        candidates = json.loads(line)["itemList"]
        if r["answer"] is not None:  # the decoded answer is the title of a candidate's item token
            assert r["answer"] in candidates and r["generated"] == r["answer"]
        assert r["hit"] == (r["answer"] == r["target"])
    assert metrics["valid_ratio"] == pytest.approx(sum(r["valid"] for r in gen) / len(gen))
    assert metrics["hr@1"] == pytest.approx(sum(r["hit"] for r in gen) / len(gen))

    sample = json.loads(open(d / "valid.jsonl").readline())
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
    shown = {r["title"]: r["score"] for r in json.loads(capsys.readouterr().out)}
    assert shown == pytest.approx(dict(first["eval:0"]), abs=1e-4)

    export = ["export", "--model", model, "--out", str(tmp_path / "merged")] + (["--merge"] if lora else [])
    assert main(export) == 0
    assert json.loads((tmp_path / "merged" / "sdporec_codec.json").read_text()) == record
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "merged"),
                "--data",
                str(d / "valid.jsonl"),
                "--no-progress",
                "--out",
                str(tmp_path / "rank-merged"),
            ]
        )
        == 0
    )
    merged = ranked(tmp_path / "rank-merged" / PREDICTIONS)
    for key, rows in first.items():
        assert dict(merged[key]) == pytest.approx(dict(rows), abs=1e-4)


def test_item_token_settings_and_unknown_titles_are_one_line_errors_before_anything_is_written(
    tiny_text_model, tmp_path, capsys
):
    d, _ = tiny_text_model
    data = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    gguf = tmp_path.parent / f"{tmp_path.name}-fake.gguf"  # a GGUF header is all the checks read
    gguf.write_bytes(b"GGUF")
    for argv, said in (
        (["sft", "--item-tokens", *data, "--out", str(tmp_path / "a")], "setting 'item_tokens'"),
        (
            ["sft", "--model", str(d / "model"), "--item-init", "hidden", *data, "--out", str(tmp_path / "b")],
            "setting 'item_init': applies with --item-tokens only",
        ),
        (
            ["sft", "--model", str(d / "model"), "--item-text", "token", *data, "--out", str(tmp_path / "c")],
            "setting 'item_text'",
        ),
        (
            [
                "sft",
                "--model",
                str(gguf),
                "--item-tokens",
                "--lora",
                "--load-in-4bit",
                *data,
                "--out",
                str(tmp_path / "e"),
            ],
            "setting 'load_in_4bit'",
        ),
        (
            [
                "sft",
                "--model",
                str(d / "model"),
                "--item-tokens",
                "--history-weight",
                "1",
                "--history-in",
                "prompt",
                *data,
                "--out",
                str(tmp_path / "f"),
            ],
            "setting 'history_in': with --item-text title",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())

    assert (
        main(
            [
                "sft",
                "--model",
                str(d / "model"),
                "--item-tokens",
                "--out",
                str(tmp_path / "sft"),
                "--train",
                str(d / "train.jsonl"),
                *CLI_FAST,
            ]
        )
        == 0
    )  # valid.jsonl's titles not in the vocabulary
    model = str(tmp_path / "sft" / "model")
    (tmp_path / "new.jsonl").write_text(
        open(d / "valid.jsonl").readline().replace('"itemList": ["', '"itemList": ["Unheard Of", "')
    )
    capsys.readouterr()
    new = str(tmp_path / "new.jsonl")
    for argv, where in (
        (["evaluate", "--model", model, "--data", new, "--out", str(tmp_path / "ev")], new),
        (["sdpo", "--model", model, "--train", new, "--out", str(tmp_path / "sdpo")], new),
        (["recommend", "--model", model, "--history", "Unheard Of", "--candidates", "Unheard Of"], "command line"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "'Unheard Of'" in err and "item tokens" in err and where in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "sdpo").exists()
    assert (
        main(
            [
                "sft",
                "--model",
                model,
                "--item-tokens",
                "--train",
                str(d / "train.jsonl"),
                "--out",
                str(tmp_path / "again"),
            ]
        )
        == 2
    )
    assert "has item tokens already" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_resume_of_an_item_token_lora_run_equals_the_uninterrupted_run(tiny_text_model, tmp_path):
    """The resumable checkpoint holds the adapter and the trained item rows: a run resumed from its step-3
    checkpoint (the step-4 one removed, as if killed after writing it; resuming drops the log lines after
    step 3) logs what the uninterrupted run logged."""
    import shutil

    d, _ = tiny_text_model
    args = [
        "sft",
        "--model",
        str(d / "model"),
        "--item-tokens",
        "--lora",
        "--lora-dropout",
        "0.1",
        "--train",
        str(d / "train.jsonl"),
        "--valid",
        str(d / "valid.jsonl"),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--eval-every",
        "1",
        "--eval-samples",
        "4",
        "--save-every",
        "1",
        "--log-every",
        "1",
        "--no-progress",
    ]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*args, "--out", str(whole)]) == 0
    assert main([*args, "--out", str(cut)]) == 0
    assert sorted(p.name for p in (cut / "checkpoints").glob("step-*")) == ["step-00000003", "step-00000004"]
    shutil.rmtree(cut / "checkpoints" / "step-00000004")
    (cut / SUMMARY).unlink()
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        rows = [
            [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in (run / log).read_text().splitlines()]
            for run in (whole, cut)
        ]
        assert rows[0] == rows[1]
    for run in (whole, cut):
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(run / "model"),
                    "--data",
                    str(d / "valid.jsonl"),
                    "--no-progress",
                    "--out",
                    str(run / "eval"),
                ]
            )
            == 0
        )
    assert ranked(whole / "eval" / PREDICTIONS) == ranked(cut / "eval" / PREDICTIONS)


def test_pipeline_with_item_tokens_and_a_test_title_it_would_not_know(tiny_text_model, tmp_path, capsys):
    from sdporec.data.samples import write_samples

    d, splits = tiny_text_model
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text((d / f"{name}.jsonl").read_text())
    write_samples(data / "test.jsonl", splits["test"][:4])
    run = [
        "pipeline",
        "--model",
        str(d / "model"),
        "--lora",
        "--item-tokens",
        "--data",
        str(data),
        "--sft-epochs",
        "1",
        "--batch-size",
        "8",
        "--eval-samples",
        "4",
        "--pref-eval-every",
        "0",
        "--no-progress",
    ]
    assert main([*run, "--out", str(tmp_path / "run")]) == 0
    metrics = read_pipeline_metrics(tmp_path / "run" / METRICS)
    assert set(metrics) == {"popularity", "sft", "dpo", "sdpo"} and all(m["n"] == 4 for m in metrics.values())
    assert json.loads((tmp_path / "run" / "sdpo" / "model" / "sdporec_codec.json").read_text())["kind"] == "hybrid"
    test = (data / "test.jsonl").read_text().replace('"itemList": ["', '"itemList": ["Unheard Of", "', 1)
    (data / "test.jsonl").write_text(test)
    capsys.readouterr()
    assert main([*run, "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl" in err and "'Unheard Of'" in err and not (tmp_path / "again").exists()


def test_cooc_rows_read_the_training_histories_by_the_names_of_the_item_tokens(tiny_text_model, tmp_path):
    """`sft --item-init cooc` starts the rows from the training file's co-occurrence, with an id that shares a title
    ('Title [item N]', as `prepare` names it) counted as the title's one token: the saved base rows are those of
    `add_item_rows` on the histories read that way, and not those of the histories read as spelled."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.data.hybrid import item_key
    from sdporec.data.samples import read_samples
    from sdporec.models.item_rows import add_item_rows

    d, splits = tiny_text_model
    shared = splits["train"][0].history[0]
    rows = open(d / "train.jsonl").read().splitlines()
    renamed = [r.replace(f'"{shared}"', f'"{shared} [item 99]"') if i % 2 else r for i, r in enumerate(rows)]
    assert renamed != rows
    (tmp_path / "train.jsonl").write_text("\n".join(renamed) + "\n")
    assert (
        main(
            [
                "sft",
                "--model",
                str(d / "model"),
                "--item-tokens",
                "--item-init",
                "cooc",
                "--lora",
                "--out",
                str(tmp_path / "sft"),
                "--train",
                str(tmp_path / "train.jsonl"),
                *CLI_FAST,
            ]
        )
        == 0
    )
    path = tmp_path / "sft" / "model"
    titles = json.loads((path / "sdporec_codec.json").read_text())["items"]
    assert shared in titles and f"{shared} [item 99]" not in titles
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = tokenizer.convert_tokens_to_ids([item_token(n) for n in range(len(titles))])
    saved = AutoModelForCausalLM.from_pretrained(str(path / "base")).get_input_embeddings().weight[ids]
    train = read_samples(tmp_path / "train.jsonl", "train")
    for name, read in (("tokens", item_key), ("spelled", str)):
        model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
        add_item_rows(
            model, tokenizer, titles, ids, "cooc", "music", [[read(t) for t in s.history + [s.target]] for s in train]
        )
        rows = model.get_input_embeddings().weight[ids]
        assert torch.allclose(rows, saved, atol=1e-6) == (name == "tokens"), name
