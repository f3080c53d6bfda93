"""Every supported family, as a tiny model built from a config: SFT, S-DPO with LoRA, both evaluation
protocols, export --merge, and a save -> load round trip with equal scores."""

import json

import pytest
import torch
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.data.batching import collate
from sdporec.data.codec import TextCodec
from sdporec.data.prompts import build_prompt
from sdporec.evaluation.scoring import LMScorer
from sdporec.models.checkpoints import save_checkpoint
from sdporec.models.families import FAMILIES, build_family, tokenizer_texts
from sdporec.models.loading import load_model
from sdporec.models.logprobs import answer_logprobs_cached, answer_logprobs_full, answer_logprobs_packed
from sdporec.models.lora import lora_targets
from sdporec.runs import PREDICTIONS, TRAIN_LOG, read_evaluation_metrics

SIZE = ["--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab-size", "400"]
TRAIN = ["--epochs", "1", "--batch-size", "8", "--eval-samples", "8", "--no-progress", "--domain", "music"]
BLOCK_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("families-data")
    return d, write_small_splits(d, users=30, items=60, seed=0, n_train=32, n_valid=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_and_packed_scores_equal_the_paper_layout(family, data):
    _, splits = data
    samples = splits["train"][:3]
    model, tokenizer = build_family(
        family, tokenizer_texts(splits["train"]), 32, 2, 4, seed=0, vocab_size=400, kv_heads=2
    )
    codec = TextCodec(tokenizer)
    batch = collate(
        [codec.encode_prompt(build_prompt(s.history, s.candidates, "music", 0)) for s in samples],
        [[codec.encode_answer(c) for c in s.candidates[:4]] for s in samples],
        codec.pad_id,
    )
    model.eval()
    with torch.no_grad():
        shared, counts = answer_logprobs_cached(model, batch)
        packed, counts_packed = answer_logprobs_packed(model, batch)
        full, counts_full = answer_logprobs_full(model, batch)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=1e-5)
    assert torch.equal(counts, counts_full) and torch.equal(counts_packed, counts_full)
    expected = {"c_attn", "c_proj", "c_fc"} if family == "gpt2" else BLOCK_LINEARS
    assert set(lora_targets(model)) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_evaluates_exports_and_round_trips(family, data, tmp_path):
    d, splits = data
    init = tmp_path / "init"
    assert main(["init-model", "--family", family, "--train", str(d / "train.jsonl"), "--out", str(init), *SIZE]) == 0
    assert json.loads((init / "config.json").read_text())["model_type"] == family
    files = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    assert main(["sft", "--model", str(init), "--out", str(tmp_path / "sft"), "--lr", "3e-3", *files, *TRAIN]) == 0
    assert (
        main(
            [
                "sdpo",
                "--model",
                str(tmp_path / "sft" / "model"),
                "--out",
                str(tmp_path / "sdpo"),
                "--negatives",
                "3",
                "--lora",
                "--lora-r",
                "4",
                "--lora-dropout",
                "0",
                *files,
                *TRAIN,
            ]
        )
        == 0
    )
    for stage in ("sft", "sdpo"):
        log = [json.loads(x) for x in (tmp_path / stage / TRAIN_LOG).read_text().splitlines()]
        assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    adapter = tmp_path / "sdpo" / "model"
    assert (adapter / "adapter_config.json").is_file()
    results = {}
    for name, model_dir, protocol in (("rank", adapter, "ranking"), ("gen", adapter, "generation")):
        out = tmp_path / f"eval-{name}"
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(model_dir),
                    "--data",
                    str(d / "valid.jsonl"),
                    "--out",
                    str(out),
                    "--protocol",
                    protocol,
                    "--no-progress",
                ]
            )
            == 0
        )
        results[name] = read_evaluation_metrics(out)
        assert results[name]["n"] == 8
    assert 0 <= results["gen"]["hr@1"] <= results["gen"]["valid_ratio"] <= 1

    # export --merge: a plain model whose scores equal the adapter's
    merged = tmp_path / "merged"
    assert main(["export", "--model", str(adapter), "--out", str(merged), "--merge"]) == 0
    assert not (merged / "adapter_config.json").exists()
    valid = splits["valid"][:8]
    adapter_model, codec = load_model(str(adapter))
    merged_model, _ = load_model(str(merged))
    assert type(merged_model).__module__.startswith("transformers.")

    def score(m):
        return torch.tensor(LMScorer(m, codec, "music", progress=False)(valid))

    adapter_scores = score(adapter_model)
    torch.testing.assert_close(score(merged_model), adapter_scores, atol=1e-4, rtol=1e-4)
    ranked = [json.loads(x) for x in (tmp_path / "eval-rank" / PREDICTIONS).read_text().splitlines()]
    assert ranked[0]["ranked"][0][1] == pytest.approx(float(adapter_scores[0].max()), abs=1e-4)

    # save -> load round trip of the full SFT model: equal scores
    sft_model, sft_codec = load_model(str(tmp_path / "sft" / "model"))
    save_checkpoint(sft_model, sft_codec, tmp_path / "again", {"stage": "test"})
    again, _ = load_model(str(tmp_path / "again"))
    torch.testing.assert_close(score(again), score(sft_model), atol=1e-6, rtol=1e-6)
