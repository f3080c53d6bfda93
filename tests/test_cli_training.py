"""Training commands on the tiny pipeline run's data and SFT checkpoint (`run_dir`, conftest.py): LoRA from SFT to
S-DPO, the adapter's frozen reference, and the reference pass precomputed, cached and reused."""

import json

import pytest
from conftest import TINY_BUILTIN

from sdporec.cli import main
from sdporec.runs import TRAIN_LOG


def test_lora_sft_then_sdpo_from_the_adapter(run_dir, tmp_path):
    data = run_dir / "data"
    common = [
        "--train",
        str(data / "train.jsonl"),
        "--valid",
        str(data / "valid.jsonl"),
        "--eval-samples",
        "20",
        "--epochs",
        "1",
        "--no-progress",
        "--lora",
        "--lora-r",
        "4",
    ]
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "sft"),
                *TINY_BUILTIN,
                "--titles",
                str(data / "items.txt"),
                *common,
            ]
        )
        == 0
    )
    sft_model = tmp_path / "sft" / "model"
    assert (sft_model / "adapter_config.json").is_file() and (sft_model / "base" / "config.json").is_file()
    assert main(["sdpo", "--model", str(sft_model), "--out", str(tmp_path / "sdpo"), *common[:-3]]) == 0
    assert (tmp_path / "sdpo" / "model" / "adapter_config.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "sdpo" / "model"),
                "--data",
                str(data / "test.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "--limit",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )


def test_reference_adapter_equals_the_sft_model(run_dir, tmp_path):
    """With an SFT adapter, the frozen reference gives exactly the SFT model's log-probs."""
    import torch

    from sdporec.data.batching import collate
    from sdporec.data.prompts import build_prompt
    from sdporec.data.samples import read_samples
    from sdporec.models.loading import load_model
    from sdporec.models.logprobs import answer_logprobs_packed
    from sdporec.models.policy import policy_from_sft

    data = run_dir / "data"
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "sft"),
                *TINY_BUILTIN,
                "--train",
                str(data / "train.jsonl"),
                "--epochs",
                "1",
                "--no-progress",
                "--lora",
                "--titles",
                str(data / "items.txt"),
            ]
        )
        == 0
    )
    path = str(tmp_path / "sft" / "model")
    sft, codec = load_model(path)
    policy, _ = policy_from_sft(path, False, 8, 16, 0.0, "float32")
    s = read_samples(data / "test.jsonl")[:4]
    batch = collate(
        [codec.encode_prompt(build_prompt(x.history, x.candidates)) for x in s],
        [[codec.encode_answer(c) for c in x.candidates[:3]] for x in s],
        codec.pad_id,
    )
    with torch.no_grad():
        expected = answer_logprobs_packed(sft, batch)[0]
    with torch.no_grad():  # perturb the trainable copy: the reference must not move
        for n, p in policy.model.named_parameters():
            if ".default." in n:
                p.add_(0.5)
    with policy.reference() as ref:
        torch.testing.assert_close(answer_logprobs_packed(ref, batch)[0], expected)
    assert any(p.requires_grad for n, p in policy.model.named_parameters() if ".default." in n)
    assert not any(p.requires_grad for n, p in policy.model.named_parameters() if ".reference." in n)


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / TRAIN_LOG).read_text().splitlines()]


def test_precomputed_reference_equals_online_and_is_reused(run_dir, tmp_path):
    data = run_dir / "data"
    common = [
        "dpo",
        "--model",
        str(run_dir / "sft" / "model"),
        "--train",
        str(data / "train.jsonl"),
        "--epochs",
        "2",
        "--negatives",
        "3",
        "--log-every",
        "1",
        "--no-progress",
    ]
    cache = tmp_path / "cache"
    assert main([*common, "--out", str(tmp_path / "online"), "--reference-pass", "online"]) == 0
    assert main([*common, "--out", str(tmp_path / "pre"), "--reference-cache", str(cache)]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 2  # one per epoch: candidate lists change per epoch
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}
    assert main([*common, "--out", str(tmp_path / "again"), "--reference-cache", str(cache)]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")} == stamps  # read, not recomputed
    online, pre, again = (_losses(tmp_path / n) for n in ("online", "pre", "again"))
    assert online == pytest.approx(pre, abs=1e-5) and pre == again
    # Settings that change the reference's numbers get their own entries, never the float32 ones.
    assert (
        main([*common, "--out", str(tmp_path / "bf16"), "--reference-cache", str(cache), "--mixed-precision", "bf16"])
        == 0
    )
    assert len(list(cache.glob("*.safetensors"))) == 4 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert main([*common, "--out", str(tmp_path / "layout"), "--reference-cache", str(cache), "--layout", "paper"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 6


def test_precompute_holds_no_reference_model(run_dir):
    from sdporec.models.policy import policy_from_sft

    policy, _ = policy_from_sft(str(run_dir / "sft" / "model"), False, 8, 16, 0.0, "float32", resident_reference=False)
    assert policy._ref_model is None
