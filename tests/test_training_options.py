"""Precision, gradient checkpointing and 4-bit loading: what works on a CPU, and clear errors for what needs CUDA."""

import copy
import json
import warnings

import pytest
import torch

from sdporec.cli import main
from sdporec.data.batching import collate
from sdporec.models import logprobs
from sdporec.models.lora import enable_gradient_checkpointing
from sdporec.runs import SUMMARY, TRAIN_LOG

SIZE = ["--hidden", "32", "--layers", "1", "--heads", "2"]
TINY = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--eval-samples", "8"]


def test_gradient_checkpointing_gives_the_same_logprobs_and_gradients(tiny_llama, monkeypatch):
    model, codec = tiny_llama
    plain, ckpt = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    enable_gradient_checkpointing(ckpt)
    ids = [codec.title_id(f"Artist {i}") for i in range(6)]
    batch = collate(
        [[codec.bos_id, *ids[:4]], [codec.bos_id, *ids[2:5]]],
        [[[ids[0], codec.eos_id], [ids[5], codec.eos_id]]] * 2,
        codec.pad_id,
    )
    monkeypatch.setattr(logprobs, "_warned", False)
    with warnings.catch_warnings():
        # No cache under checkpointing, yet no fall back to the paper's layout: the packed row shares the prompt.
        warnings.filterwarnings("error", message=".*paper's layout")
        lp_ckpt, _ = logprobs.answer_logprobs_packed(ckpt, batch)
    lp_plain, _ = logprobs.answer_logprobs_packed(plain, batch)
    torch.testing.assert_close(lp_ckpt, lp_plain, atol=1e-5, rtol=1e-5)
    lp_ckpt.sum().backward()
    lp_plain.sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_and_checkpointing_train_on_cpu(small_splits, tmp_path):
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "bf16"),
                "--mixed-precision",
                "bf16",
                "--gradient-checkpointing",
                *small_splits,
                *SIZE,
                *TINY,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "dpo",
                "--out",
                str(tmp_path / "lora"),
                "--model",
                str(tmp_path / "bf16" / "model"),
                "--lora",
                "--gradient-checkpointing",
                "--mixed-precision",
                "bf16",
                *small_splits,
                *TINY,
            ]
        )
        == 0
    )
    for run in ("bf16", "lora"):
        rows = [json.loads(x) for x in (tmp_path / run / TRAIN_LOG).read_text().splitlines()]
        assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    saved = json.loads((tmp_path / "bf16" / "model" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "float32"  # autocast leaves fp32 weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors raised without CUDA")
def test_what_needs_cuda_says_so(small_splits, tmp_path, capsys):
    assert main(["sft", "--out", str(tmp_path / "a"), "--mixed-precision", "fp16", *small_splits, *TINY]) == 2
    assert "'mixed_precision': fp16 needs a CUDA GPU" in capsys.readouterr().err
    assert main(["sft", "--out", str(tmp_path / "b"), "--load-in-4bit", *small_splits, *TINY]) == 2
    assert "add --lora" in capsys.readouterr().err
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "c"),
                "--load-in-4bit",
                "--lora",
                "--model",
                "some/model",
                *small_splits,
                *TINY,
            ]
        )
        == 2
    )
    assert "'load_in_4bit': 4-bit NF4 loading (bitsandbytes) needs a CUDA GPU" in capsys.readouterr().err


def test_every_layout_trains_to_the_same_losses(small_splits, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *small_splits, *SIZE, *TINY]) == 0
    losses = {}
    for layout in ("packed", "flex", "cache", "paper", "auto"):
        assert (
            main(
                [
                    "dpo",
                    "--out",
                    str(tmp_path / layout),
                    "--model",
                    str(tmp_path / "sft" / "model"),
                    "--layout",
                    layout,
                    "--reference-cache",
                    "none",
                    "--log-every",
                    "1",
                    *small_splits,
                    *TINY,
                ]
            )
            == 0
        )
        losses[layout] = [json.loads(x)["loss"] for x in (tmp_path / layout / TRAIN_LOG).read_text().splitlines()]
        used = json.loads((tmp_path / layout / SUMMARY).read_text())["layout"]
        assert used == ("packed" if layout == "auto" else layout)  # auto on a CPU: the packed layout
    assert len(losses["paper"]) == 4
    for layout in ("packed", "flex", "cache", "auto"):
        assert losses[layout] == pytest.approx(losses["paper"], abs=1e-5), layout


def test_a_lora_checkpoint_saves_the_gathered_state_dict_it_is_given(tiny_llama, tmp_path):
    """Under FSDP / ZeRO-3 the process's own parameters are shards: the gathered full state dict is what
    must be written, for adapters as for full models."""
    from safetensors.torch import load_file

    from sdporec.models.checkpoints import save_checkpoint
    from sdporec.models.lora import add_lora

    model, codec = tiny_llama
    peft_model = add_lora(copy.deepcopy(model), 2, 4, 0.0)
    gathered = {k: torch.full_like(v, 0.5) if "lora_" in k else v for k, v in peft_model.state_dict().items()}
    save_checkpoint(peft_model, codec, tmp_path / "ckpt", {"stage": "test"}, state_dict=gathered)
    saved = load_file(str(tmp_path / "ckpt" / "adapter_model.safetensors"))
    assert saved and all(torch.all(v == 0.5) for v in saved.values())


def test_hidden_dropout_acts_only_in_training_and_leaves_a_plain_checkpoint(tiny_llama, small_splits, tmp_path):
    from sdporec.models.builtin import add_hidden_dropout
    from sdporec.models.loading import load_model

    plain, dropped = copy.deepcopy(tiny_llama[0]), copy.deepcopy(tiny_llama[0])  # the shared fixture untouched
    handles = add_hidden_dropout(dropped, 0.5)
    assert len(handles) == 1 + 2 * len(dropped.model.layers)  # embeddings, each attention and MLP output
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        reference = plain.eval()(input_ids=ids).logits
        torch.testing.assert_close(dropped.eval()(input_ids=ids).logits, reference)  # identity in eval
        assert not torch.allclose(dropped.train()(input_ids=ids).logits, reference)
    for h in handles:
        h.remove()
    assert main(["sft", "--out", str(tmp_path / "d"), "--dropout", "0.3", *small_splits, *SIZE, *TINY]) == 0
    loaded, _ = load_model(str(tmp_path / "d" / "model"))
    assert not loaded.model.embed_tokens._forward_hooks  # later stages train without it
    assert main(["sft", "--out", str(tmp_path / "e"), "--dropout", "1", *small_splits, *SIZE, *TINY]) == 2


def test_negatives_from_the_model_are_harder_and_the_sft_and_history_terms_are_added(small_splits, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *small_splits, *SIZE, *TINY, "--epochs", "2"]) == 0
    first = {}
    for source in ("uniform", "popular", "model"):
        assert (
            main(
                [
                    "sdpo",
                    "--model",
                    str(tmp_path / "sft" / "model"),
                    "--out",
                    str(tmp_path / source),
                    "--negatives-from",
                    source,
                    "--log-every",
                    "1",
                    "--reference-cache",
                    "none",
                    *small_splits,
                    *TINY,
                ]
            )
            == 0
        )
        first[source] = json.loads((tmp_path / source / TRAIN_LOG).read_text().splitlines()[0])
    # At the first step the policy is the SFT model: the model's own top-K negatives have the highest log-probs.
    assert first["model"]["logp_rejected"] > first["uniform"]["logp_rejected"]
    assert first["model"]["logp_rejected"] > first["popular"]["logp_rejected"]
    assert (
        main(
            [
                "sdpo",
                "--model",
                str(tmp_path / "sft" / "model"),
                "--out",
                str(tmp_path / "w"),
                "--sft-weight",
                "1",
                "--log-every",
                "1",
                "--reference-cache",
                "none",
                *small_splits,
                *TINY,
            ]
        )
        == 0
    )
    weighted = json.loads((tmp_path / "w" / TRAIN_LOG).read_text().splitlines()[0])
    # The SFT term: the chosen answer's per-token loss; item tokens: 2 per answer (title + EOS).
    assert weighted["loss"] == pytest.approx(first["uniform"]["loss"] - weighted["logp_chosen"] / 2, rel=1e-4)
    assert (
        main(
            [
                "sdpo",
                "--model",
                str(tmp_path / "sft" / "model"),
                "--out",
                str(tmp_path / "h"),
                "--history-weight",
                "0.5",
                "--log-every",
                "1",
                "--reference-cache",
                "none",
                *small_splits,
                *TINY,
            ]
        )
        == 0
    )
    history = json.loads((tmp_path / "h" / TRAIN_LOG).read_text().splitlines()[0])
    # The history term: the history's next-item loss per labelled title, weighted; the preference part unchanged.
    assert history["history_loss"] > 0
    assert history["loss"] == pytest.approx(first["uniform"]["loss"] + 0.5 * history["history_loss"], rel=1e-4)
    assert history["logp_chosen"] == pytest.approx(first["uniform"]["logp_chosen"], rel=1e-5)


def test_title_rewards_leave_the_eos_out(small_splits, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *small_splits, *SIZE, *TINY]) == 0
    first = {}
    for tokens in ("answer", "title"):
        assert (
            main(
                [
                    "sdpo",
                    "--model",
                    str(tmp_path / "sft" / "model"),
                    "--out",
                    str(tmp_path / tokens),
                    "--reward-tokens",
                    tokens,
                    "--log-every",
                    "1",
                    "--reference-cache",
                    "none",
                    *small_splits,
                    *TINY,
                ]
            )
            == 0
        )
        first[tokens] = json.loads((tmp_path / tokens / TRAIN_LOG).read_text().splitlines()[0])
    # Same first batch and weights: the title's log-prob alone is the answer's minus its (negative) EOS term.
    assert first["title"]["logp_chosen"] > first["answer"]["logp_chosen"]
    assert first["title"]["reward_chosen"] == pytest.approx(0.0, abs=1e-5)  # policy = reference at step 1


def test_4bit_loading_reaches_bitsandbytes_with_cuda_faked(monkeypatch, tmp_path):
    """The 4-bit path up to the GPU: the CUDA check passes, bitsandbytes is imported, and transformers gets an
    NF4 config on the current device (no CUDA here, so both are faked and from_pretrained is captured)."""
    import sys
    import types

    from sdporec.models import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    seen = {}
    monkeypatch.setattr(loading, "_pretrained", lambda path, **kw: seen.update(path=path, **kw) or "model")
    assert loading.load_weights(str(tmp_path), "float32", load_in_4bit=True) == "model"
    quant = seen["quantization_config"]
    assert (quant.load_in_4bit, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert seen["dtype"] == torch.bfloat16 and seen["device_map"] == {"": 0} and seen["path"] == str(tmp_path)


def test_4bit_loading_without_bitsandbytes_is_a_setting_error(monkeypatch, tmp_path):
    import sys

    from sdporec.errors import ConfigError
    from sdporec.models import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(ConfigError, match="setting 'load_in_4bit': bitsandbytes is not installed"):
        loading.load_weights(str(tmp_path), "float32", load_in_4bit=True)
