"""The scoring layouts' other paths (models/logprobs.py): where a layout cannot run and what runs instead (and says
so), models wrapped by peft, DDP-style wrappers, FSDP and DeepSpeed, and bf16 weights. Values against the paper layout,
as in test_logprobs.py."""

import functools
import warnings

import pytest
import torch
from test_logprobs import random_batch

import sdporec.models.heads as heads
from sdporec.models.heads import HiddenHead
from sdporec.models.logprobs import answer_logprobs_cached, answer_logprobs_full, answer_logprobs_packed


def test_without_4d_masks_packed_runs_the_cache_path_and_under_checkpointing_the_paper_layout(tiny_llama, monkeypatch):
    model, codec = tiny_llama
    batch = random_batch(codec, n_samples=2, n_answers=3, seed=2)
    import sdporec.models.logprobs as lp

    full = answer_logprobs_full(model, batch)[0]
    # Flash attention would ignore the mask (and needs a GPU): pretend the model was loaded with it.
    monkeypatch.setattr(lp, "_attention", lambda model: "flash_attention_2")
    monkeypatch.setattr(lp, "_warned", False)  # a fall-back would now be said, whatever ran before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache path is as fast: no warning
        torch.testing.assert_close(answer_logprobs_packed(model, batch)[0], full, atol=1e-5, rtol=0)
    # Gradient checkpointing keeps no cache either: only the paper's layout is left, and the log says so.
    monkeypatch.setattr(lp, "_checkpointing", lambda model: True)
    monkeypatch.setattr(lp, "_warned", False)
    with pytest.warns(UserWarning, match="flash_attention_2.*paper's layout"):
        got = answer_logprobs_packed(model, batch)[0]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)


def test_models_without_a_cache_fall_back_to_the_paper_layout(tiny_llama, monkeypatch):
    model, codec = tiny_llama

    class NoCache(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            kw.pop("use_cache", None)
            kw.pop("logits_to_keep", None)
            out = self.inner(**kw, use_cache=False)
            out.cache = None
            out.past_key_values = None
            return out

    batch = random_batch(codec, n_samples=3, n_answers=3, seed=1)
    import sdporec.models.logprobs as lp

    monkeypatch.setattr(lp, "_warned", False)
    with pytest.warns(UserWarning, match="paper's layout"):
        got = answer_logprobs_packed(NoCache(model), batch)[0]
    torch.testing.assert_close(got, answer_logprobs_full(model, batch)[0], atol=1e-5, rtol=0)


def own_tiny_llama():
    """A tiny Llama of this test's own (the session's `tiny_llama` must not be put into training or checkpointing)."""
    from sdporec.models.builtin import BuiltinSize, build_builtin

    titles = [f"Artist {i}" for i in range(40)] + ["Air", "Air Supply", "Answer"]
    model, codec = build_builtin(titles, BuiltinSize(hidden=32, layers=2, heads=4), seed=0)
    return model.float(), codec


def test_under_gradient_checkpointing_the_cache_layout_runs_one_packed_pass():
    """No cache is kept under checkpointing: the cache layout runs the packed row at once (one forward pass, no
    prompt pass whose cache would be thrown away), with the paper layout's numbers and no warning."""
    from sdporec.models.lora import enable_gradient_checkpointing

    model, codec = own_tiny_llama()
    batch = random_batch(codec, n_samples=3, n_answers=3, seed=3)
    full = answer_logprobs_full(model, batch)[0].detach()
    enable_gradient_checkpointing(model)
    model.train()
    calls = []
    model.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = answer_logprobs_cached(model, batch)[0]
    assert len(calls) == 1
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)
    got.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


class OddCache(torch.nn.Module):
    """A model whose cache cannot be copied per answer (no `batch_repeat_interleave`), kept as `.module` the way
    DDP keeps it, so its config (and so its attention) is still found."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner

    def forward(self, **kw):
        out = self.module(**kw)
        out.cache = out.past_key_values = object()
        return out


def test_a_cache_that_cannot_be_copied_runs_packed_where_masks_apply_else_the_paper_layout(monkeypatch):
    import sdporec.models.logprobs as lp

    model, codec = own_tiny_llama()
    batch = random_batch(codec, n_samples=3, n_answers=3, seed=4)
    full = answer_logprobs_full(model, batch)[0]
    monkeypatch.setattr(lp, "_warned", False)  # a fall-back would now be said
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # packed is as fast: nothing to say
        torch.testing.assert_close(answer_logprobs_cached(OddCache(model), batch)[0], full, atol=1e-5, rtol=0)
    monkeypatch.setattr(lp, "_attention", lambda model: "flash_attention_2")
    monkeypatch.setattr(lp, "_warned", False)
    with pytest.warns(UserWarning) as said:
        got = answer_logprobs_cached(OddCache(model), batch)[0]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)
    assert [str(w.message) for w in said] == [
        "OddCache returned no reusable key/value cache; scoring with the paper's layout (each answer after its own "
        "copy of the prompt), which is slower"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        answer_logprobs_cached(OddCache(model), batch)


def test_a_bfloat16_model_scores_packed_as_the_paper_layout_does():
    """The packed mask is made in the model's dtype (SDPA refuses a float mask of another dtype than its
    queries)."""
    model, codec = own_tiny_llama()
    model = model.to(torch.bfloat16)
    batch = random_batch(codec, n_samples=3, n_answers=3, seed=5)
    with torch.no_grad():
        packed = answer_logprobs_packed(model, batch)[0]
        full = answer_logprobs_full(model, batch)[0]
    assert packed.dtype == full.dtype == torch.float32
    torch.testing.assert_close(packed, full, atol=0.05, rtol=0.01)


def test_under_checkpointing_with_attention_that_takes_no_4d_mask_the_paper_layout_runs_and_says_why(monkeypatch):
    import sdporec.models.logprobs as lp
    from sdporec.models.lora import enable_gradient_checkpointing

    model, codec = own_tiny_llama()
    batch = random_batch(codec, n_samples=2, n_answers=3, seed=6)
    full = answer_logprobs_full(model, batch)[0].detach()
    enable_gradient_checkpointing(model)
    model.train()
    # As if this model were loaded with flash attention (which needs a GPU): it reports it, and runs SDPA here.
    monkeypatch.setattr(lp, "_attention", lambda m: "flash_attention_2" if m is model else None)
    monkeypatch.setattr(lp, "_warned", False)
    with pytest.warns(UserWarning) as said:
        got = answer_logprobs_packed(model, batch)[0]
    assert [str(w.message) for w in said] == [
        "LlamaForCausalLM trains with gradient checkpointing (no key/value cache) and uses attention "
        "'flash_attention_2', which does not apply a custom 4D mask; scoring with the paper's layout (each answer "
        "after its own copy of the prompt), which is slower"
    ]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)


def test_a_lora_model_scores_through_its_base_models_head_as_the_paper_layout_does():
    """peft wraps the model twice (PeftModel, LoraModel): the hidden states are read from the decoder inside."""
    from sdporec.models.lora import add_lora

    model, codec = own_tiny_llama()
    model = add_lora(model, 4, 8, 0.0)
    torch.manual_seed(2)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter change the numbers
            p.data.normal_(0, 0.2)
    batch = random_batch(codec, n_samples=3, n_answers=3, seed=7)
    with torch.no_grad():
        with model.disable_adapter():
            base = answer_logprobs_full(model, batch)[0]
            torch.testing.assert_close(answer_logprobs_packed(model, batch)[0], base, atol=1e-5, rtol=0)
        full = answer_logprobs_full(model, batch)[0]
        packed = answer_logprobs_packed(model, batch)[0]
    assert not torch.allclose(full, base, atol=1e-3)
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=0)
    assert HiddenHead.run(model, dict(input_ids=batch.prompt_ids)) is not None


class ShardingWrapper(torch.nn.Module):
    """Stands in for FSDP's and DeepSpeed's wrappers (made with their class names below): parameters sharded outside
    the forward, so no head may be applied by hand."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner

    def forward(self, **kw):
        return self.module(**kw)


# FSDP 1's wrapper, FSDP 2's class made by fully_shard ("FSDP" + the module's own), DeepSpeed's engine.
@pytest.mark.parametrize("wrapper", ["FullyShardedDataParallel", "FSDPLlamaForCausalLM", "DeepSpeedEngine"])
def test_sharded_models_get_their_logits_from_the_model_itself(monkeypatch, wrapper):
    import sdporec.models.logprobs as lp

    model, codec = own_tiny_llama()
    wrapped = type(wrapper, (ShardingWrapper,), {})(model)
    ids = dict(input_ids=torch.tensor([[1, 5, 6]]))
    monkeypatch.setattr(lp, "_warned", False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the wrapped model's attention is found: no fall-back
        assert HiddenHead.run(model, ids) is not None
        assert HiddenHead.run(wrapped, ids) is None
        model.model.layers[0].mlp.up_proj.weight.ds_id = 3  # a DeepSpeed ZeRO-3 parameter
        assert HiddenHead.run(model, ids) is None
        del model.model.layers[0].mlp.up_proj.weight.ds_id
        batch = random_batch(codec, n_samples=2, n_answers=3, seed=8)
        torch.testing.assert_close(
            answer_logprobs_packed(wrapped, batch)[0], answer_logprobs_full(model, batch)[0], atol=1e-5, rtol=0
        )


def every_scorer(model, codec):
    """{name: call -> tensors} for each layout and each labelled pass, with batches that reach their branches: item
    answers of two tokens, text answers of different lengths, prompt labels, histories. The flex layout runs on a
    copy of `model` (`use_flex` changes its attention)."""
    import copy

    from sdporec.data.batching import IGNORE, collate
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import answer_and_prompt_logprobs, history_logprobs
    from sdporec.models.scoring import answer_logprobs_flex, answer_logprobs_short, use_flex

    items = random_batch(codec, n_samples=3, n_answers=3, seed=9)
    text = collate([[1, 5, 6, 7], [1, 8]], [[[9, 10, 2], [11, 2]], [[12, 2], [13, 14, 15, 2]]], codec.pad_id)
    rows = [(["Artist 1", "Air", "Artist 3"], ["Artist 9", "Answer"], "Artist 9"), (["Artist 4"], ["Air"], "Air")]
    labelled = [codec.encode_prompt_history(build_prompt(h, c, "music", i), IGNORE) for i, (h, c, _) in enumerate(rows)]
    prompt_labels = collate([ids for ids, _ in labelled], [[codec.encode_answer(t)] for *_, t in rows], codec.pad_id)
    prompt_labels.with_prompt_labels([labels for _, labels in labelled], IGNORE)
    histories = collate([[1, 5], [1, 6]], [[[9, 2]]] * 2, codec.pad_id)
    histories.with_histories([codec.encode_history(h, IGNORE) for h, *_ in rows], codec.pad_id, IGNORE)
    flexed = copy.deepcopy(model)
    assert use_flex(flexed)
    scorers = {
        "prompt labels": functools.partial(answer_and_prompt_logprobs, model, prompt_labels),
        "history": functools.partial(history_logprobs, model, histories),
        "short": functools.partial(answer_logprobs_short, model, items),
        "flex": functools.partial(answer_logprobs_flex, flexed, text),
    }
    for fn in (answer_logprobs_packed, answer_logprobs_cached, answer_logprobs_full):
        scorers[fn.__name__] = functools.partial(fn, model, items)
        scorers[fn.__name__ + " text"] = functools.partial(fn, model, text)
    return scorers


@pytest.mark.parametrize("head", ["hidden", "kept logits"])
@pytest.mark.parametrize("default", ["device", "dtype"])
def test_every_layout_makes_its_tensors_on_the_batchs_device_in_the_models_dtype(monkeypatch, default, head):
    """With torch's default device or dtype set to something else (a user's `torch.set_default_device("cuda")` with
    a model on another device, or float64), every index, mask and sum is made where the batch is and in the
    model's dtype: the numbers made under torch's defaults, on the same device and dtype. A tensor left on the
    default device would be on the wrong device on a GPU; here `meta` stands in for it."""
    import sdporec.models.logprobs as lp

    model, codec = own_tiny_llama()
    if head == "kept logits":
        monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
    scorers = every_scorer(model, codec)
    assert lp._attention(model) == "sdpa"
    with torch.no_grad():
        expected = {name: fn() for name, fn in scorers.items()}
        for name, fn in scorers.items():
            if default == "device":
                with torch.device("meta"):
                    got = fn()
            else:
                before = torch.get_default_dtype()
                torch.set_default_dtype(torch.float64)
                try:
                    got = fn()
                finally:
                    torch.set_default_dtype(before)
            for g, e in zip(got, expected[name], strict=True):
                assert (g.device, g.dtype) == (e.device, e.dtype), name
                torch.testing.assert_close(g, e, atol=1e-6, rtol=0, msg=name)
