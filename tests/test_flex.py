"""The flex layout (models/flex.py, scoring.use_flex): the packed rows' pattern as a FlexAttention BlockMask gives the
paper layout's numbers; FlexAttention runs for real here without gradients (it has no CPU backward), and with them
the same pattern runs dense on SDPA."""

import functools
import json
import warnings

import pytest
import torch
from test_logprobs import random_batch
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from sdporec.data.batching import collate
from sdporec.models import flex
from sdporec.models.builtin import BuiltinSize, build_builtin
from sdporec.models.logprobs import answer_logprobs_full, answer_logprobs_packed, pack_rows, packed_mask
from sdporec.models.scoring import (
    FASTEST,
    answer_logprobs_flex,
    answer_logprobs_flex_short,
    answer_logprobs_short,
    resolve_layout,
    scoring_layout,
    use_flex,
)

TITLES = [f"Artist {i}" for i in range(40)] + ["Air", "Air Supply", "Answer"]
# Text answers of 3, 2, 2 and 4 tokens after prompts of 4 and 2 (left-padded): padding inside and after rows.
UNEVEN = dict(prompts=[[1, 5, 6, 7], [1, 8]], answers=[[[9, 10, 2], [11, 2]], [[12, 2], [13, 14, 15, 2]]])


def fresh_model(heads=4, kv_heads=None):
    """A tiny Llama of its own: `use_flex` changes a model's attention, so no model is shared between tests."""
    model, codec = build_builtin(TITLES, BuiltinSize(hidden=48, layers=2, heads=heads), seed=0)
    if kv_heads:  # grouped-query attention: fewer key/value heads, the same weights otherwise re-drawn
        from transformers import LlamaForCausalLM

        model.config.num_key_value_heads = kv_heads
        torch.manual_seed(0)
        model = LlamaForCausalLM(model.config)
    return model.float(), codec


def small_block_mask(real, block):
    """`packed_pattern`'s BlockMask over rows of any length (`flex.block_mask` wants whole tiles), on the CPU."""
    b, length = real.shape
    return create_block_mask(functools.partial(flex.packed_pattern, real, block), b, None, length, length, device="cpu")


def uneven_batch(codec):
    return collate(UNEVEN["prompts"], UNEVEN["answers"], codec.pad_id)


def assert_values_equal_the_paper_layouts(fn, model, batch):
    """`fn`'s log-probs and token counts, without gradients (FlexAttention itself on a CPU), against the paper's."""
    with torch.no_grad():
        paper = answer_logprobs_full(model, batch)
        got = fn(model, batch)
    torch.testing.assert_close(got[0], paper[0], atol=1e-5, rtol=0)
    assert torch.equal(got[1], paper[1])


def test_the_pattern_is_the_packed_mask_and_bucket_padding_sees_only_itself():
    _, codec = fresh_model()
    for batch in (uneven_batch(codec), random_batch(codec)):
        rows = pack_rows(batch)
        b, length = rows.ids.shape
        inputs = flex.flex_inputs(rows)
        padded = inputs["input_ids"].shape[1]
        assert padded == flex.BUCKET and padded > length
        dense = create_mask(inputs["attention_mask"].mask_mod, b, 1, padded, padded, device="cpu")
        assert torch.equal(dense[..., :length, :length], packed_mask(rows.real, rows.block))
        assert not dense[..., :length, length:].any()  # nobody attends to the bucket padding
        assert torch.equal(dense[0, 0, length:, length:], torch.eye(padded - length, dtype=torch.bool))
        assert torch.equal(inputs["input_ids"][:, :length], rows.ids) and not inputs["input_ids"][:, length:].any()
        assert torch.equal(inputs["position_ids"][:, :length], rows.positions)


def test_masks_are_made_on_the_batchs_device_on_a_machine_with_an_accelerator(monkeypatch):
    """torch makes masks on the current accelerator unless told otherwise: a batch on the CPU of a GPU machine
    (`--device cpu`) must get its masks on the CPU. The accelerator is faked as the `meta` device."""
    _, codec = fresh_model()
    inputs = flex.flex_inputs(pack_rows(uneven_batch(codec)))
    want = flex.dense_mask(inputs["attention_mask"])
    real, block = inputs["attention_mask"].mask_mod.args[:2]
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("meta"))
    mask = flex.block_mask(real, block)
    assert mask.kv_num_blocks.device.type == "cpu"
    dense = flex.dense_mask(mask)
    assert dense.device.type == "cpu" and torch.equal(dense, want)


def test_bucketed_rounds_up_to_whole_tiles():
    assert [flex.bucketed(n) for n in (1, 127, 128, 129, 400)] == [128, 128, 128, 256, 512]


@pytest.mark.parametrize("make", [uneven_batch, random_batch], ids=["uneven", "random"])
def test_flex_attention_gives_the_paper_layouts_numbers(make):
    model, codec = fresh_model()
    assert_values_equal_the_paper_layouts(answer_logprobs_flex, model, make(codec))
    assert model.config._attn_implementation == flex.FLEX


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 2)], ids=["gqa", "gqa-non-power-of-two"])
def test_flex_attention_with_grouped_query_heads(heads, kv_heads):
    model, codec = fresh_model(heads, kv_heads)
    assert_values_equal_the_paper_layouts(answer_logprobs_flex, model, uneven_batch(codec))


def test_short_answers_under_flex_equal_the_paper_layout():
    model, codec = fresh_model()
    # Item tokens: every answer one token then EOS.
    assert_values_equal_the_paper_layouts(answer_logprobs_flex_short, model, random_batch(codec))


def flex_and_paper_gradients(model, codec) -> list[list[torch.Tensor]]:
    """The trainable parameters' gradients of a weighted sum of `uneven_batch`'s log-probs, flex then paper."""
    batch, weights = uneven_batch(codec), torch.tensor([[1.0, -0.5], [0.3, 2.0]])
    grads = []
    for fn in (answer_logprobs_flex, answer_logprobs_full):
        model.zero_grad()
        (fn(model, batch)[0] * weights).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    return grads


def test_flex_gradients_equal_the_paper_layouts():
    model, codec = fresh_model()
    grads = flex_and_paper_gradients(model, codec)
    assert model.config._attn_implementation == flex.FLEX
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_every_other_call_of_a_flex_model_is_unchanged():
    """Generation, the paper layout and plain forward passes run on SDPA as before the switch, a left-padded
    batch's 2D attention mask included (made into SDPA's mask by the mask function `flex.register` names)."""
    model, codec = fresh_model()
    batch = uneven_batch(codec)
    ids = torch.tensor([[1, 5, 6, 7, 9]])
    padded, mask = torch.tensor([[0, 0, 1, 5, 6], [1, 8, 9, 10, 11]]), torch.tensor([[0, 0, 1, 1, 1], [1] * 5])

    def calls():
        return (
            answer_logprobs_full(model, batch)[0],
            model(input_ids=ids).logits,
            model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0),
            model(input_ids=padded, attention_mask=mask).logits[:, 2:],
            model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0),
        )

    with torch.no_grad():
        before = calls()
        assert not torch.allclose(model(input_ids=padded).logits[:, 2:], before[3])  # the mask matters here
        use_flex(model)
        after = calls()
    assert model.config._attn_implementation == flex.FLEX
    for got, expected in zip(after, before):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_flex_softcap_and_scale_match_a_hand_computed_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) * 3 for _ in range(3))
    real, block = torch.ones(1, 5, dtype=torch.bool), torch.full((1, 5), -1)
    mask = small_block_mask(real, block)
    with torch.no_grad():
        out, weights = flex.flex_or_sdpa(torch.nn.Module(), q, k, v, mask, scaling=0.7, softcap=2.0)
    scores = torch.tanh(q @ k.transpose(-1, -2) * 0.7 / 2.0) * 2.0
    scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(out, (scores.softmax(-1) @ v).transpose(1, 2), atol=1e-5, rtol=1e-5)
    assert weights is None
    # The score_mod by hand, called as FlexAttention calls it (score, batch, head, query, key).
    capped = flex.SoftCap(2.0)(torch.tensor([3.0, -1.0, 0.0]), 0, 0, 0, 0)
    torch.testing.assert_close(capped, 2.0 * torch.tanh(torch.tensor([1.5, -0.5, 0.0])), atol=1e-7, rtol=0)


def test_flex_on_the_cpu_runs_uncompiled_without_telling_the_user_to_compile(monkeypatch):
    """torch warns once a process on an uncompiled FlexAttention call; on a CPU that is the design (no fused kernel
    there), so the warning is for CUDA only. torch's once-a-process record is emptied before each call."""
    from torch.nn.attention import flex_attention as module

    real, block = torch.ones(1, 5, dtype=torch.bool), torch.full((1, 5), -1)
    mask = small_block_mask(real, block)
    q = torch.randn(1, 2, 5, 4)
    monkeypatch.setattr(module, "_WARNINGS_SHOWN", set())
    with warnings.catch_warnings(record=True) as seen, torch.no_grad():
        warnings.simplefilter("always")
        flex.flex_or_sdpa(torch.nn.Module(), q, q, q, mask)
    assert [str(w.message) for w in seen] == []
    monkeypatch.setattr(module, "_WARNINGS_SHOWN", set())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        module.flex_attention(q, q, q, block_mask=mask)
    assert any("without torch.compile" in str(w.message) for w in seen)  # what torch says, called directly


@pytest.mark.parametrize("kwargs", [{"dropout": 0.1}, {"s_aux": torch.zeros(1)}], ids=["dropout", "sinks"])
def test_attention_dropout_and_sinks_are_refused_under_a_block_mask(kwargs):
    q = torch.zeros(1, 1, 2, 4)
    mask = small_block_mask(torch.ones(1, 2, dtype=torch.bool), torch.full((1, 2), -1))
    with pytest.raises(
        ValueError,
        match=r"^the flex layout applies neither attention dropout nor attention sinks: "
        r"use --layout packed with this model$",
    ):
        flex.flex_or_sdpa(torch.nn.Module(), q, q, q, mask, **kwargs)


def test_a_block_mask_with_gradients_on_the_cpu_goes_to_sdpa_with_every_argument():
    """FlexAttention has no CPU backward: with gradients the BlockMask becomes its dense pattern and the call is
    transformers' SDPA function's with the module (grouped heads), the scale and the keywords (a position bias),
    each of which changes the output here (checked)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.num_key_value_groups = 2
    torch.manual_seed(0)
    q = torch.randn(1, 4, 5, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    real, block = torch.ones(1, 5, dtype=torch.bool), torch.tensor([[-1, -1, 0, 0, 1]])
    mask = small_block_mask(real, block)
    dense = flex.dense_mask(mask)
    assert not dense[0, 0, 4, 2] and dense[0, 0, 3, 2]  # answer 1 does not see answer 0
    outputs = []
    for kwargs in ({}, {"scaling": 0.7}, {"position_bias": torch.randn(1, 4, 5, 5)}):
        got = flex.flex_or_sdpa(module, q, k, v, mask, **kwargs)
        want = sdpa_attention_forward(module, q, k, v, dense, **kwargs)
        assert got[1] is None and want[1] is None
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        assert got[0].requires_grad
        outputs.append(got[0])
    assert all(not torch.allclose(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


def test_a_model_that_keeps_its_attention_is_not_taken_for_flex(monkeypatch):
    """transformers only logs when a model cannot change its attention: `use_flex` checks what it got."""
    model, codec = fresh_model()
    monkeypatch.setattr(type(model), "set_attn_implementation", lambda self, name: None)
    monkeypatch.setattr("sdporec.models.scoring._warned", set())
    with pytest.warns(UserWarning, match="cannot change its attention implementation"):
        assert not use_flex(model)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    "attention,training,dropout,why",
    [
        ("flash_attention_2", False, 0.0, "attention is 'flash_attention_2', not sdpa"),
        ("eager", False, 0.0, "attention is 'eager', not sdpa"),  # Gemma-2's soft-capping is eager-only
        ("sdpa", True, 0.1, "attention dropout"),
    ],
    ids=["flash", "eager", "dropout"],
)
def test_flex_where_it_cannot_run_says_why_and_scores_packed(attention, training, dropout, why, monkeypatch):
    model, codec = fresh_model()
    model.config._attn_implementation_internal = attention
    model.config.attention_dropout = dropout
    model.train(training)
    monkeypatch.setattr("sdporec.models.scoring._warned", set())
    called = []
    monkeypatch.setattr("sdporec.models.scoring.answer_logprobs_packed", lambda m, b: called.append(b) or "packed")
    with pytest.warns(UserWarning, match=why):
        assert answer_logprobs_flex(model, uneven_batch(codec)) == "packed"
    assert called and model.config._attn_implementation == attention
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        answer_logprobs_flex(model, uneven_batch(codec))


@pytest.mark.parametrize(
    "attention,dropout,ran", [("eager", 0.0, "packed"), ("sdpa", 0.1, "flex")], ids=["eager", "dropout-in-training"]
)
def test_the_scorer_names_the_layout_that_scored(attention, dropout, ran, monkeypatch):
    """Asked for flex, the scorer records packed where flex fell back; a model with attention dropout left in
    training mode still scores flex, since scoring runs in eval mode."""
    from sdporec.data.samples import Sample
    from sdporec.evaluation.scoring import LMScorer

    model, codec = fresh_model()
    model.config._attn_implementation_internal = attention
    model.config.attention_dropout = dropout
    model.train()
    monkeypatch.setattr("sdporec.models.scoring._warned", set())
    scorer = LMScorer(model, codec, "music", progress=False, layout="flex")
    assert scorer.layout == "flex"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = scorer([Sample(TITLES[:3], TITLES[3:8], TITLES[5])])
    assert scorer.layout == ran and len(scores[0]) == 5 and model.training


def test_a_model_saved_after_flex_loads_in_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model, codec = fresh_model()
    use_flex(model)
    model.save_pretrained(tmp_path)
    assert flex.FLEX not in (tmp_path / "config.json").read_text()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config._attn_implementation in ("sdpa", "eager")
    ids = torch.tensor([[1, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"


def test_auto_resolves_to_the_fastest_measured_layout_per_device():
    assert resolve_layout("auto", "cpu") == FASTEST["cpu"] == "packed"
    assert resolve_layout("auto", torch.device("cuda", 1)) == FASTEST["cuda"]
    assert resolve_layout("auto", "mps") == "paper"  # never measured: no custom mask needed
    assert [resolve_layout(n, "cuda") for n in ("packed", "flex", "cache", "paper")] == [
        "packed",
        "flex",
        "cache",
        "paper",
    ]
    # Item tokens: one row of the prompt and a token per candidate beats N rows of the prompt everywhere.
    assert resolve_layout("auto", "cuda", short_answers=True) == resolve_layout("auto", "mps", True) == "packed"
    assert resolve_layout("paper", "cuda", short_answers=True) == "paper"


def test_scoring_layout_names():
    assert scoring_layout("flex") is answer_logprobs_flex
    assert scoring_layout("flex", short_answers=True) is answer_logprobs_flex_short
    assert scoring_layout("auto", device="cpu") is answer_logprobs_packed
    assert scoring_layout("auto", short_answers=True, device="cpu") is answer_logprobs_short
    assert scoring_layout("auto", device="cuda") is answer_logprobs_full
    assert scoring_layout("auto", short_answers=True, device="cuda") is answer_logprobs_short
    with pytest.raises(ValueError, match="needs the device"):
        scoring_layout("auto")


@pytest.mark.parametrize("wrap", ["lora", "checkpointing"])
def test_flex_under_lora_and_gradient_checkpointing_gives_the_paper_layouts_gradients(wrap):
    from sdporec.models.lora import add_lora, enable_gradient_checkpointing

    model, codec = fresh_model()
    if wrap == "lora":
        model = add_lora(model, 4, 8, 0.0)
        torch.manual_seed(1)
        for name, p in model.named_parameters():  # B starts at zero, which would leave A without a gradient
            if "lora_B" in name:
                p.data.normal_(0, 0.1)
    else:
        enable_gradient_checkpointing(model)
    model.train()
    grads = flex_and_paper_gradients(model, codec)
    assert (
        model.get_base_model().config._attn_implementation == flex.FLEX
        if wrap == "lora"
        else model.config._attn_implementation == flex.FLEX
    )
    assert grads[0] and all(g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_anything_but_a_block_mask_goes_to_sdpa_with_every_argument():
    """Without a BlockMask the call is transformers' SDPA function's, argument for argument: the module (grouped
    heads, causality), the scale, attention dropout and the keywords (`is_causal`), each of which changes the output
    here (checked), so none may be dropped on the way."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, False
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    mask[..., 1] = False
    cases = [
        dict(attention_mask=mask),
        dict(attention_mask=None),
        dict(attention_mask=None, is_causal=True),
        dict(attention_mask=mask, scaling=0.7),
        dict(attention_mask=mask, dropout=0.5),
    ]
    outputs = []
    for kwargs in cases:
        torch.manual_seed(1)
        got = flex.flex_or_sdpa(module, q, k, v, **kwargs)
        torch.manual_seed(1)
        want = sdpa_attention_forward(module, q, k, v, **kwargs)
        assert got[1] is None and want[1] is None
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        outputs.append(got[0])
    assert all(not torch.allclose(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])
