"""Logits formed only where a label is scored (models/heads.py): label log-probs by hand, final-logit soft-capping
applied by hand, and models whose head scales its logits scored with their own logits."""

import math

import pytest
import torch
from test_logprobs import whole_row_reference

import sdporec.models.heads as heads
from sdporec.data.batching import collate
from sdporec.models.logprobs import (
    answer_logprobs_full,
    answer_logprobs_packed,
)


def test_label_logprobs_by_hand():
    from sdporec.models.heads import label_logprobs

    class Table:  # logits looked up from a (samples, columns, V) table
        vocab = 3

        def __init__(self, table):
            self.table = table

        def logits(self, sample, column):
            return self.table[sample, column]

    table = torch.zeros(1, 2, 3)
    table[0, 1] = torch.tensor([math.log(2.0), 0.0, 0.0])  # column 1: p = 1/2, 1/4, 1/4
    got = label_logprobs(Table(table), torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), torch.tensor([2, 0, 2]))
    torch.testing.assert_close(got, torch.tensor([math.log(1 / 3), math.log(1 / 2), math.log(1 / 4)]))
    # No position to score (a batch whose prompts hold no labels): an empty float32 result, no logits formed.
    none = torch.zeros(0, dtype=torch.long)
    empty = label_logprobs(Table(table), none, none, none)
    assert empty.shape == (0,) and empty.dtype == torch.float32


def small_vocabulary_batch():
    """Prompts of 4 and 2 tokens, answers of 3, 2, 2 and 4 (EOS 1, padding 0), for models of 40 tokens."""
    return collate([[2, 5, 6, 7], [2, 8]], [[[9, 10, 1], [11, 1]], [[12, 1], [13, 14, 15, 1]]], 0)


# A one-layer model of 40 tokens, as `small_vocabulary_batch` asks, in each family's config.
SMALL_LM = dict(
    vocab_size=40,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def test_final_logit_softcapping_is_applied_where_logits_are_formed_by_hand(monkeypatch):
    """Gemma-2 caps its logits (tanh(x / c) * c): the hidden-state head must give the model's own logits' numbers."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(
        **SMALL_LM,
        head_dim=8,
        final_logit_softcapping=0.5,
        attn_implementation="eager",
    )
    model = Gemma2ForCausalLM(cfg).eval()
    batch = small_vocabulary_batch()
    with torch.no_grad():
        by_hand, counts = answer_logprobs_full(model, batch)
        monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
        own = answer_logprobs_full(model, batch)[0]
    # Logits within +-0.5: no token's log-prob is more than 1 below the uniform one.
    assert (by_hand / counts).min() > -math.log(40) - 1.0
    torch.testing.assert_close(by_hand, own, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [answer_logprobs_full, answer_logprobs_packed], ids=["paper", "packed"])
def test_a_head_that_scales_its_logits_is_scored_with_the_models_own_logits(layout):
    """Granite divides its logits by `logits_scaling`, a step the hidden-state head does not apply: such models
    are scored from their own logits, equal to the whole-row reference (and not to the unscaled head's)."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    cfg = GraniteConfig(**SMALL_LM, logits_scaling=0.1)
    model = GraniteForCausalLM(cfg).eval()
    batch = small_vocabulary_batch()
    with torch.no_grad():
        got = layout(model, batch)[0]
        want = whole_row_reference(model, batch)[0]
        model.config.logits_scaling = 1.0  # the same weights, logits not scaled
        unscaled = whole_row_reference(model, batch)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - unscaled).abs().max() > 0.1
