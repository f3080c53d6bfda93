"""Precision, gradient checkpointing and 4-bit loading: what works on a CPU, and clear errors for what needs CUDA."""

import copy
import json
import warnings

import pytest
import torch
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.data.batching import collate
from sdporec.models import logprobs
from sdporec.models.lora import enable_gradient_checkpointing
from sdporec.runs import CONFIG, EVAL_LOG, SUMMARY, TRAIN_LOG, read_evaluation_metrics

SIZE = ["--hidden", "32", "--layers", "1", "--heads", "2"]
TINY = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--eval-samples", "8"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("options-data")
    write_small_splits(d, users=30, items=60, seed=3, n_train=32, n_valid=8)
    return ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]


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


def test_bf16_autocast_and_checkpointing_train_on_cpu(files, tmp_path):
    assert (
        main(
            [
                "sft",
                "--out",
                str(tmp_path / "bf16"),
                "--mixed-precision",
                "bf16",
                "--gradient-checkpointing",
                *files,
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
                *files,
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
def test_what_needs_cuda_says_so(files, tmp_path, capsys):
    assert main(["sft", "--out", str(tmp_path / "a"), "--mixed-precision", "fp16", *files, *TINY]) == 2
    assert "'mixed_precision': fp16 needs a CUDA GPU" in capsys.readouterr().err
    assert main(["sft", "--out", str(tmp_path / "b"), "--load-in-4bit", *files, *TINY]) == 2
    assert "add --lora" in capsys.readouterr().err
    assert (
        main(["sft", "--out", str(tmp_path / "c"), "--load-in-4bit", "--lora", "--model", "some/model", *files, *TINY])
        == 2
    )
    assert "'load_in_4bit': 4-bit NF4 loading (bitsandbytes) needs a CUDA GPU" in capsys.readouterr().err


def test_every_layout_trains_to_the_same_losses(files, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *files, *SIZE, *TINY]) == 0
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
                    *files,
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


def test_history_sequences_label_every_title_after_the_first(tiny_llama):
    from sdporec.models.logprobs import IGNORE

    _, codec = tiny_llama
    ids, labels = codec.encode_history(["Artist 1", "Air", "Air Supply"], IGNORE)
    t = codec.title_id
    assert ids == [codec.bos_id, t("Artist 1"), t("Air"), t("Air Supply")]
    assert labels == [IGNORE, IGNORE, t("Air"), t("Air Supply")]


def test_history_loss_trains_and_is_reported(files, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "h"), "--history-weight", "0.5", *files, *SIZE, *TINY]) == 0
    rows = [json.loads(x) for x in (tmp_path / "h" / TRAIN_LOG).read_text().splitlines()]
    assert all("answer_loss" in r and r["loss"] > 0 for r in rows)
    # The logged loss is (answer loss + 0.5 x history loss) over answer and history tokens: with the history
    # term it differs from the answer loss per answer token.
    assert main(["sft", "--out", str(tmp_path / "a"), *files, *SIZE, *TINY]) == 0
    plain = [json.loads(x)["loss"] for x in (tmp_path / "a" / TRAIN_LOG).read_text().splitlines()]
    assert plain[0] != pytest.approx(rows[0]["loss"])


def test_hidden_dropout_acts_only_in_training_and_leaves_a_plain_checkpoint(tiny_llama, files, tmp_path):
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
    assert main(["sft", "--out", str(tmp_path / "d"), "--dropout", "0.3", *files, *SIZE, *TINY]) == 0
    loaded, _ = load_model(str(tmp_path / "d" / "model"))
    assert not loaded.model.embed_tokens._forward_hooks  # later stages train without it
    assert main(["sft", "--out", str(tmp_path / "e"), "--dropout", "1", *files, *SIZE, *TINY]) == 2


def test_negatives_from_the_model_are_harder_and_the_sft_and_history_terms_are_added(files, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *files, *SIZE, *TINY, "--epochs", "2"]) == 0
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
                    *files,
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
                *files,
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
                *files,
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


def test_title_rewards_leave_the_eos_out(files, tmp_path):
    assert main(["sft", "--out", str(tmp_path / "sft"), *files, *SIZE, *TINY]) == 0
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
                    *files,
                    *TINY,
                ]
            )
            == 0
        )
        first[tokens] = json.loads((tmp_path / tokens / TRAIN_LOG).read_text().splitlines()[0])
    # Same first batch and weights: the title's log-prob alone is the answer's minus its (negative) EOS term.
    assert first["title"]["logp_chosen"] > first["answer"]["logp_chosen"]
    assert first["title"]["reward_chosen"] == pytest.approx(0.0, abs=1e-5)  # policy = reference at step 1


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


def test_history_loss_inside_the_prompt_trains_and_needs_a_weight(files, tmp_path):
    out = tmp_path / "p"
    assert (
        main(["sft", "--out", str(out), "--history-weight", "0.5", "--history-in", "prompt", *files, *SIZE, *TINY]) == 0
    )
    rows = [json.loads(x) for x in (out / TRAIN_LOG).read_text().splitlines()]
    assert all(r["loss"] > 0 and r["answer_loss"] > 0 for r in rows)
    assert "history_in: prompt" in (out / CONFIG).read_text()
    assert main(["sft", "--out", str(tmp_path / "q"), "--history-in", "prompt", *files, *SIZE, *TINY]) == 2


def test_validation_chooses_the_history_readout_with_the_checkpoint_and_evaluate_uses_it(files, tmp_path, capsys):
    from sdporec.models.checkpoints import Checkpoint

    out = tmp_path / "h"
    assert main(["sft", "--out", str(out), "--history-weight", "1", "--epochs", "2", *files, *SIZE, *TINY[2:]]) == 0
    evals = [json.loads(x) for x in (out / EVAL_LOG).read_text().splitlines()]
    for row in evals:  # every default weight tried; the row's HR@1 is the best of them, the smaller λ on ties
        by = row["hr@1_by_readout"]
        assert list(by) == ["0", "0.25", "0.5", "0.75", "1"]
        assert row["hr@1"] == max(by.values()) and by[f"{row['history_readout']:g}"] == row["hr@1"]
        assert row["history_readout"] == min(float(w) for w, v in by.items() if v == row["hr@1"])
    best = [r for r in evals if r["best"]][-1]
    meta = Checkpoint.read(out / "model").meta
    assert meta["history_readout"] == best["history_readout"] and meta["learned_history"] is True
    data = files[3]  # the validation file: evaluate at the recorded λ matches training's number
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
                *files,
                *TINY,
            ]
        )
        == 0
    )
    assert "hr@1_by_readout" in (tmp_path / "d" / EVAL_LOG).read_text()
    assert Checkpoint.read(tmp_path / "d" / "model").meta["learned_history"] is True
    assert main(["sft", "--out", str(tmp_path / "a"), *files, *SIZE, *TINY]) == 0
    assert "hr@1_by_readout" not in (tmp_path / "a" / EVAL_LOG).read_text()
    assert Checkpoint.read(tmp_path / "a" / "model").meta["history_readout"] == 0


def test_history_readout_weights_are_checked(files, tmp_path, capsys):
    for bad, said in (
        (["--history-readouts", "0", "1.5"], "each must be in [0, 1]"),
        (["--history-readouts", "0", "0.5", "--valid", ""], "needs validation data"),
    ):
        assert main(["sft", "--out", str(tmp_path / "x"), *files, *bad, *SIZE, *TINY]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "x").exists()


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
