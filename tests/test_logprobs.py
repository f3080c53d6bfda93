import math

import pytest
import torch

import sdporec.models.heads as heads
from sdporec.data.batching import collate, split_chosen_rejected
from sdporec.data.prompts import build_prompt
from sdporec.models.logprobs import (
    IGNORE,
    answer_logprobs_cached,
    answer_logprobs_full,
    answer_logprobs_packed,
    pack_rows,
    packed_mask,
    sequence_logprobs,
)


def test_sequence_logprobs_hand_computed():
    # Vocabulary of 2; uniform logits give log(1/2) per scored token.
    logits = torch.zeros(1, 4, 2)
    logits[0, 2] = torch.tensor([math.log(3.0), 0.0])  # position 2 predicts label 3: p(0) = 3/4
    labels = torch.tensor([[IGNORE, IGNORE, 1, 0]])  # labels 2 and 3 are scored
    logps, n = sequence_logprobs(logits, labels)
    assert n.tolist() == [2]
    assert logps.item() == pytest.approx(math.log(0.5) + math.log(0.75))


def random_batch(codec, n_samples=5, n_answers=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    titles = [t for t in codec.vocab if t.startswith("Artist")]
    prompts, answers = [], []
    for i in range(n_samples):
        hist = [titles[j] for j in torch.randperm(len(titles), generator=g)[: 1 + i % 4].tolist()]
        cands = [titles[j] for j in torch.randperm(len(titles), generator=g)[:n_answers].tolist()]
        prompts.append(codec.encode_prompt(build_prompt(hist, cands, "music", i % 4)))
        answers.append([codec.encode_answer(c) for c in cands])
    return collate(prompts, answers, codec.pad_id)


SHARED_LAYOUTS = pytest.mark.parametrize(
    "shared_fn", [answer_logprobs_cached, answer_logprobs_packed], ids=["cache", "packed"]
)


@SHARED_LAYOUTS
def test_shared_prompt_equals_full_layout_values_and_gradients(tiny_llama, shared_fn):
    model, codec = tiny_llama
    batch = random_batch(codec)
    assert len(set(batch.prompt_mask.sum(1).tolist())) > 1  # prompts of different lengths: padding matters
    shared, n1 = shared_fn(model, batch)
    full, n2 = answer_logprobs_full(model, batch)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=0)
    assert n1.tolist() == n2.tolist() == [[2] * 4] * 5
    grads = []
    for fn in (shared_fn, answer_logprobs_full):
        model.zero_grad()
        (fn(model, batch)[0] * torch.linspace(-1, 1, 20).view(5, 4)).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@SHARED_LAYOUTS
def test_text_answers_of_different_lengths_are_scored_exactly(tiny_llama, shared_fn):
    model, codec = tiny_llama
    batch = collate([[1, 5, 6, 7], [1, 8]], [[[9, 10, 2], [11, 2]], [[12, 2], [13, 14, 15, 2]]], codec.pad_id)
    torch.testing.assert_close(shared_fn(model, batch)[0], answer_logprobs_full(model, batch)[0], atol=1e-5, rtol=0)
    assert shared_fn(model, batch)[1].tolist() == [[3, 2], [2, 4]]
    grads = []
    for fn in (shared_fn, answer_logprobs_full):
        model.zero_grad()
        (fn(model, batch)[0] * torch.tensor([[1.0, -0.5], [0.3, 2.0]])).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_pack_rows_by_hand():
    # Sample 0: prompt [pad, p1, p2], answers [a0] and [b0, b1]; sample 1: prompt [q0, q1, q2], answers
    # [c0, c1, c2] and [d0]. Answers keep their real tokens only; sample 0's row ends in tail padding.
    batch = collate([[11, 12], [20, 21, 22]], [[[31], [41, 42]], [[51, 52, 53], [61]]], pad_id=0)
    rows = pack_rows(batch)
    assert rows.ids.tolist() == [[0, 11, 12, 31, 41, 42, 0], [20, 21, 22, 51, 52, 53, 61]]
    assert rows.real.int().tolist() == [[0, 1, 1, 1, 1, 1, 0], [1] * 7]
    assert rows.block.tolist() == [[-1, -1, -1, 0, 1, 1, -2], [-1, -1, -1, 0, 0, 0, 1]]
    # Every answer starts where its prompt ends: 2 real prompt tokens in sample 0, 3 in sample 1.
    assert rows.positions.tolist() == [[0, 0, 1, 2, 2, 3, 0], [0, 1, 2, 3, 4, 5, 3]]
    assert rows.cols[0, :, :2].tolist() == [[3, 4], [4, 5]]  # a0 (then a padding slot), b0 b1
    assert rows.cols[1, :, 0].tolist() == [3, 6]


def test_packed_mask_by_hand():
    # One row: prompt [pad, p1, p2], answer 0 [a0], answer 1 [b0, b1], then tail padding.
    allowed = packed_mask(torch.tensor([[0, 1, 1, 1, 1, 1, 0]]).bool(), torch.tensor([[-1, -1, -1, 0, 1, 1, -2]]))[
        0, 0
    ].int()
    expected = torch.tensor(
        [
            # pad p1 p2 a0 b0 b1 tail   (keys)
            [1, 0, 0, 0, 0, 0, 0],  # pad: itself only
            [0, 1, 0, 0, 0, 0, 0],  # p1
            [0, 1, 1, 0, 0, 0, 0],  # p2
            [0, 1, 1, 1, 0, 0, 0],  # a0: the prompt and itself
            [0, 1, 1, 0, 1, 0, 0],  # b0: the prompt, not answer 0
            [0, 1, 1, 0, 1, 1, 0],  # b1
            [0, 1, 1, 0, 0, 0, 1],  # tail padding (never scored): no one sees it
        ]
    )
    assert torch.equal(allowed, expected)


def test_split_chosen_rejected_asserts_layout():
    chosen, rejected = split_chosen_rejected(torch.arange(8.0).view(2, 4), 3)
    assert chosen.tolist() == [0.0, 4.0] and rejected.shape == (2, 3)
    with pytest.raises(AssertionError):
        split_chosen_rejected(torch.zeros(2, 4), 2)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 24], ids=["one-position", "ragged-chunks", "one-chunk"])
def test_packed_scores_do_not_depend_on_chunking_or_on_how_logits_are_formed(tiny_llama, monkeypatch, chunk):
    """Logits from the decoder's hidden states and the model's own head, or from the model's own logits
    (the path for sharded models), in chunks of any size: the same numbers and gradients."""

    model, codec = tiny_llama
    batch = random_batch(codec, seed=3)
    vocab = model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(heads, "CHUNK_ELEMENTS", chunk * vocab)
    results = []
    for hidden_path in (True, False):
        if not hidden_path:
            monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
        model.zero_grad()
        logps, counts = answer_logprobs_packed(model, batch)
        (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
        results.append((logps.detach(), counts, [p.grad.clone() for p in model.parameters()]))
    full = answer_logprobs_full(model, batch)[0].detach()
    for logps, _, _ in results:
        torch.testing.assert_close(logps, full, atol=1e-5, rtol=0)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", [answer_logprobs_packed, answer_logprobs_full], ids=["packed", "paper"])
def test_scoring_a_128k_vocabulary_never_forms_all_answer_logits_at_once(monkeypatch, layout):
    """Every tensor created while ranking is watched: with a 128,256-token vocabulary, none holds
    logits for as many positions as there are answer tokens; the largest is one chunk. In both layouts
    (the paper's one repeats each prompt for 20 answers: whole-row logits ran an H100 out of memory)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = 128256
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (12, 9)]
    answers = [
        [torch.randint(3, vocab, (1 + (i + j) % 4,), generator=g).tolist() + [2] for j in range(20)] for i in range(2)
    ]
    batch = collate(prompts, answers, 0)
    answer_tokens = int(batch.answer_mask.sum())  # 2 x 20 answers, 2 to 5 tokens each
    monkeypatch.setattr(heads, "CHUNK_ELEMENTS", 16 * vocab)

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    Largest.largest = max(Largest.largest, t.numel())
            return out

    with torch.no_grad(), Largest():
        got = layout(model, batch)[0]
    rows = 2 if layout is answer_logprobs_packed else 2 * 20  # the forward pass keeps one logit row per row
    assert Largest.largest <= max(16, rows) * vocab < answer_tokens * vocab
    with torch.no_grad():
        torch.testing.assert_close(got, whole_row_reference(model, batch)[0], atol=1e-5, rtol=0)


def whole_row_reference(model, batch):
    """The paper's layout computed the plain way, independently of `answer_logprobs_full`: every row's logits
    in full, labels shifted by `sequence_logprobs`."""
    b, n, _ = batch.answer_ids.shape
    rows, labels = [], []
    for i in range(b):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
        for j in range(n):
            ans = batch.answer_ids[i, j][batch.answer_mask[i, j].bool()]
            rows.append(torch.cat([prompt, ans]))
            labels.append(torch.cat([torch.full_like(prompt, IGNORE), ans]))
    length = max(len(r) for r in rows)
    ids = torch.zeros((b * n, length), dtype=torch.long)
    lab, mask = torch.full_like(ids, IGNORE), torch.zeros_like(ids)
    for k, (row, label) in enumerate(zip(rows, labels)):
        ids[k, : len(row)], lab[k, : len(row)], mask[k, : len(row)] = row, label, 1
    logps, counts = sequence_logprobs(model(input_ids=ids, attention_mask=mask).logits, lab)
    return logps.view(b, n), counts.view(b, n)


@pytest.mark.parametrize("hidden_path", [True, False], ids=["hidden-head", "kept-logits"])
def test_paper_layout_equals_whole_row_logits_values_and_gradients(tiny_llama, monkeypatch, hidden_path):

    model, codec = tiny_llama
    if not hidden_path:
        monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
    monkeypatch.setattr(heads, "CHUNK_ELEMENTS", 7 * model.get_output_embeddings().weight.shape[0])  # ragged chunks
    text = collate([[1, 5, 6, 7], [1, 8]], [[[9, 10, 2], [11, 2]], [[12, 2], [13, 14, 15, 2]]], codec.pad_id)
    for batch in (random_batch(codec, seed=5), text):
        got, grads = [], []
        for fn in (answer_logprobs_full, whole_row_reference):
            model.zero_grad()
            logps, counts = fn(model, batch)
            (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
            got.append((logps.detach(), counts.tolist()))
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.testing.assert_close(got[0][0], got[1][0], atol=1e-5, rtol=0)
        assert got[0][1] == got[1][1]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_one_pass_gives_the_answer_logprobs_of_the_scoring_layouts_and_the_prompt_labels(tiny_llama):
    """`answer_and_prompt_logprobs` against the paper layout for the answer, and against a hand-made sum of
    log-softmax over each unpadded row for the labels inside the prompt."""
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import IGNORE, answer_and_prompt_logprobs, answer_logprobs_full

    model, codec = tiny_llama
    rows = [
        (["Artist 1", "Air", "Air Supply", "Artist 3"], ["Artist 9", "Answer"], "Artist 9"),
        (["Artist 4", "Artist 2"], ["Air", "Artist 8", "Artist 11"], "Artist 11"),
    ]
    labelled = [codec.encode_prompt_history(build_prompt(h, c, "music", i), IGNORE) for i, (h, c, _) in enumerate(rows)]
    batch = collate([ids for ids, _ in labelled], [[codec.encode_answer(t)] for *_, t in rows], codec.pad_id)
    batch.with_prompt_labels([labels for _, labels in labelled], IGNORE)
    with torch.no_grad():
        answer, history = answer_and_prompt_logprobs(model.eval(), batch)
        torch.testing.assert_close(answer, answer_logprobs_full(model, batch)[0][:, 0], atol=1e-5, rtol=1e-5)
        for i, (ids, labels) in enumerate(labelled):
            logps = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            expected = sum(logps[j - 1, label] for j, label in enumerate(labels) if label != IGNORE)
            assert history[i].item() == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("hidden_path", [True, False], ids=["hidden-head", "kept-logits"])
def test_prompt_labels_give_the_whole_row_values_and_gradients(tiny_llama, monkeypatch, hidden_path):
    """Logits formed only where a label is predicted: the same log-probs and gradients as whole-row logits
    shifted against the labels (`sequence_logprobs`), with left-padded prompts of different lengths."""
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import IGNORE, answer_and_prompt_logprobs, sequence_logprobs

    model, codec = tiny_llama
    if not hidden_path:  # the model's own logits from the first labelled column on
        monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
    rows = [
        (["Artist 1", "Air", "Air Supply", "Artist 3", "Artist 5"], ["Artist 9", "Answer"], "Artist 9"),
        (["Artist 4", "Artist 2"], ["Air", "Artist 8", "Artist 11"], "Artist 11"),
    ]
    labelled = [codec.encode_prompt_history(build_prompt(h, c, "music", i), IGNORE) for i, (h, c, _) in enumerate(rows)]
    batch = collate([ids for ids, _ in labelled], [[codec.encode_answer(t)] for *_, t in rows], codec.pad_id)
    batch.with_prompt_labels([labels for _, labels in labelled], IGNORE)
    model.train()  # dropout is 0 in the fixture: train mode only makes autograd keep what it needs

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    answer, history = answer_and_prompt_logprobs(model, batch)
    fast = grads((2 * answer + 3 * history).sum())
    a, m = batch.answer_ids[:, 0], batch.answer_mask[:, 0]
    ids, mask = torch.cat([batch.prompt_ids, a], 1), torch.cat([batch.prompt_mask, m], 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    unlabelled = torch.full_like(batch.prompt_ids, IGNORE)
    ref_answer = sequence_logprobs(logits, torch.cat([unlabelled, a.masked_fill(m == 0, IGNORE)], 1))[0]
    ref_history = sequence_logprobs(logits, torch.cat([batch.prompt_labels, torch.full_like(a, IGNORE)], 1))[0]
    torch.testing.assert_close(answer, ref_answer, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(history, ref_history, atol=1e-5, rtol=1e-5)
    assert (history < 0).all() and (answer < 0).all()
    slow = grads((2 * ref_answer + 3 * ref_history).sum())
    assert len(fast) == len(slow) > 0
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s, atol=1e-5, rtol=1e-4)
    model.eval()


def test_history_logprobs_sum_each_histories_labelled_next_titles_by_hand(tiny_llama):
    """Histories of different lengths (right-padded): each sample's summed log-prob of its titles after the first,
    against a log-softmax over its own unpadded row, and the count of those titles."""
    from sdporec.models.logprobs import history_logprobs

    model, codec = tiny_llama
    histories = [["Artist 1", "Air", "Air Supply", "Artist 3"], ["Artist 4", "Artist 2"], ["Answer", "Artist 7", "Air"]]
    encoded = [codec.encode_history(h, IGNORE) for h in histories]
    batch = collate([[1, 5], [1, 6], [1, 7]], [[[9, 2]]] * 3, codec.pad_id)
    batch.with_histories(encoded, codec.pad_id, IGNORE)
    with torch.no_grad():
        logps, counts = history_logprobs(model.eval(), batch)
        assert counts.tolist() == [3, 1, 2]
        for i, (ids, labels) in enumerate(encoded):
            row = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            expected = sum(row[j - 1, label] for j, label in enumerate(labels) if label != IGNORE)
            assert logps[i].item() == pytest.approx(float(expected), abs=1e-5)


def test_prompt_labels_need_one_answer_per_prompt(tiny_llama):
    from sdporec.models.logprobs import answer_and_prompt_logprobs

    model, codec = tiny_llama
    batch = collate([[1, 5, 6], [1, 7]], [[[9, 2], [10, 2]], [[11, 2], [12, 2]]], codec.pad_id)
    batch.with_prompt_labels([[IGNORE, IGNORE, 6], [IGNORE, 7]], IGNORE)
    with pytest.raises(AssertionError, match="one answer per prompt, with prompt labels"):
        answer_and_prompt_logprobs(model, batch)


@pytest.mark.parametrize("hidden_path", [True, False], ids=["hidden-head", "kept-logits"])
def test_the_paper_layout_fits_answers_longer_than_the_list_is_long(tiny_llama, monkeypatch, hidden_path):
    """Two answers of up to four tokens after prompts of four and two: every row as long as its own prompt and
    answer, whatever the number of answers, as the whole-row reference has it."""

    model, _ = tiny_llama
    if not hidden_path:
        monkeypatch.setattr(heads.HiddenHead, "run", classmethod(lambda cls, model, inputs: None))
    batch = collate([[2, 5, 6, 7], [2, 8]], [[[9, 10, 11, 1], [11, 1]], [[12, 1], [13, 14, 15, 1]]], 0)
    with torch.no_grad():
        got, counts = answer_logprobs_full(model, batch)
        want, want_counts = whole_row_reference(model, batch)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert counts.tolist() == want_counts.tolist() == [[4, 2], [2, 4]]
