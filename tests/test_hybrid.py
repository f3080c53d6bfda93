"""Item tokens inside a pretrained model (`sft --item-tokens`, the hybrid codec), on a tiny random Llama with a
BPE tokenizer: the codec's prompts, answers and record, the new rows' initialisation, single-token scoring
against the packed and paper layouts, and shared titles. Every stage through the CLI: test_hybrid_stages.py; the
real model: test_real_model.py."""

import json
import math

import pytest
import torch

from sdporec.data.batching import collate, same_answer_count
from sdporec.data.codec import ReservedTitle, UnknownTitle
from sdporec.data.hybrid import HybridCodec, add_item_tokens, item_token
from sdporec.data.prompts import build_prompt
from sdporec.models.checkpoints import save_codec
from sdporec.models.codecs import load_codec
from sdporec.models.families import family_config
from sdporec.models.item_rows import add_item_rows, title_pieces
from sdporec.models.logprobs import IGNORE, answer_logprobs_full, answer_logprobs_packed
from sdporec.models.scoring import answer_logprobs_short, scoring_layout


def hybrid(d, titles, item_text="title"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(d / "model"))
    items = add_item_tokens(tokenizer, titles)
    return HybridCodec(tokenizer, False, items, item_text)


def test_prompt_shows_each_title_then_its_token_and_the_answer_is_the_token_then_eos(tiny_text_model):
    d, splits = tiny_text_model
    s = splits["valid"][0]
    codec = hybrid(d, [*s.history, *s.candidates, "Spare"])
    assert codec.titles == sorted({*s.history, *s.candidates, "Spare"})
    base = len(codec.tokenizer) - len(codec.titles)
    assert codec.token_ids == list(range(base, base + len(codec.titles)))  # consecutive, after the vocabulary
    prompt = build_prompt(s.history, s.candidates, "music")
    ids = codec.encode_prompt(prompt)
    items = [i for i in ids if i >= base]
    assert items == [codec.title_id(t) for t in [*s.history, *s.candidates]]  # one token per listed title, in order
    text = codec.prompt_text(prompt)
    assert f"{s.history[0]} {item_token(codec.titles.index(s.history[0]))}, " in text
    # The space before a token is the token's (lstrip): a title then its token costs one token more than the title.
    plain = codec.tokenizer(prompt.text)["input_ids"]
    assert len(ids) == len(plain) + len(s.history) + len(s.candidates)
    short = hybrid(d, [*s.history, *s.candidates, "Spare"], "token")
    only = short.encode_prompt(prompt)
    assert len(only) < len(ids) and [i for i in only if i >= base] == items
    assert s.target not in short.tokenizer.decode(only)
    assert codec.encode_answer(s.target) == [codec.title_id(s.target), codec.eos_id]
    assert codec.encode_next_title(s.target) == [codec.title_id(s.target)]
    hist, labels = codec.encode_history(s.history, IGNORE)
    assert hist == [codec.tokenizer.bos_token_id] + [codec.title_id(t) for t in s.history]
    assert labels == [IGNORE, IGNORE] + hist[2:]


def test_prompt_history_labels_are_the_history_item_tokens_after_the_first(tiny_text_model):
    d, splits = tiny_text_model
    s = splits["valid"][1]
    codec = hybrid(d, [*s.history, *s.candidates])
    prompt = build_prompt(s.history, s.candidates, "music", 2)
    ids, labels = codec.encode_prompt_history(prompt, IGNORE)
    assert ids == codec.encode_prompt(prompt)
    assert [x for x in labels if x != IGNORE] == [codec.title_id(t) for t in s.history[1:]]
    assert all(x == IGNORE or x == i for x, i in zip(labels, ids))


def test_generation_reads_the_first_item_token_and_unknown_or_reserved_titles_are_errors(tiny_text_model):
    d, _ = tiny_text_model
    codec = hybrid(d, ["Air", "Air Supply", "Muse"])
    air, supply = codec.title_id("Air"), codec.title_id("Air Supply")
    words = codec.tokenizer("hello", add_special_tokens=False)["input_ids"]
    assert codec.generated_title([*words, supply, air, codec.eos_id]) == "Air Supply"  # the first one decides
    assert codec.generated_title([*words, codec.eos_id, air]) is None  # nothing after EOS counts
    assert codec.decode([supply, codec.eos_id]) == "Air Supply"
    assert codec.knows("Muse") and not codec.knows("Blur")
    with pytest.raises(UnknownTitle, match="Blur"):
        codec.encode_answer("Blur")
    with pytest.raises(UnknownTitle, match="Blur"):
        codec.encode_prompt(build_prompt(["Muse"], ["Blur"], "music"))
    with pytest.raises(ReservedTitle, match="<\\|item:"):
        hybrid(d, ["Muse", "odd <|item:3|> title"])
    with pytest.raises(ReservedTitle, match="already has item tokens"):
        add_item_tokens(codec.tokenizer, ["Muse"])


def test_a_saved_codec_loads_back_with_the_same_tokens(tiny_text_model, tmp_path):
    d, splits = tiny_text_model
    s = splits["valid"][0]
    codec = hybrid(d, [*s.history, *s.candidates], "token")
    save_codec(codec, tmp_path)
    record = json.loads((tmp_path / "sdporec_codec.json").read_text())
    assert record == {"kind": "hybrid", "chat": False, "item_text": "token", "items": codec.titles}
    again = load_codec(str(tmp_path))
    assert isinstance(again, HybridCodec) and again.item_ids == codec.item_ids and again.item_text == "token"
    prompt = build_prompt(s.history, s.candidates, "music")
    assert again.encode_prompt(prompt) == codec.encode_prompt(prompt)


def test_new_rows_start_from_the_title_mean_or_its_hidden_state_and_an_untied_head_gets_its_own(tiny_text_model):
    from transformers import AutoModelForCausalLM

    d, splits = tiny_text_model
    titles = ["Air Supply", "Muse", "The Nouthdos Mirrors"]
    codec = hybrid(d, titles)
    model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
    old = model.get_input_embeddings().weight.detach().clone()
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    new = model.get_input_embeddings().weight
    assert new.shape[0] == len(codec.tokenizer) and torch.equal(new[: old.shape[0]], old)
    means = torch.stack([old[p].mean(0) for p in title_pieces(codec.tokenizer, codec.titles)])
    centred = means - means.mean(0)  # what every title shares taken out, then the usual norm
    expected = centred / centred.norm(dim=-1, keepdim=True) * old.norm(dim=-1).mean()
    assert torch.allclose(new[torch.tensor(codec.token_ids)], expected, atol=1e-5)
    assert model.get_output_embeddings().weight is new  # still tied

    cfg = family_config("llama", 400, 32, 1, 2, special_ids={"pad": 0, "bos": 1, "eos": 2})
    cfg.tie_word_embeddings = False
    untied = AutoModelForCausalLM.from_config(cfg)
    emb, head = (
        untied.get_input_embeddings().weight.detach().clone(),
        untied.get_output_embeddings().weight.detach().clone(),
    )
    codec = hybrid(d, titles)
    add_item_rows(untied, codec.tokenizer, codec.titles, codec.token_ids, "hidden")
    rows = torch.tensor(codec.token_ids)
    for w in (untied.get_input_embeddings().weight, untied.get_output_embeddings().weight):
        unit = torch.nn.functional.normalize(w[rows].detach(), dim=-1)
        assert (unit @ unit.T)[~torch.eye(3, dtype=torch.bool)].mean() < 0  # centred: three rows spread apart
    for w, known in ((untied.get_input_embeddings().weight, emb), (untied.get_output_embeddings().weight, head)):
        norms = w[rows].detach().norm(dim=-1)
        assert torch.allclose(norms, known.norm(dim=-1).mean().expand(len(rows)), rtol=1e-4)
    assert not torch.allclose(untied.get_input_embeddings().weight[rows], untied.get_output_embeddings().weight[rows])


def short_batch(codec, samples, n_answers):
    prompts = [codec.encode_prompt(build_prompt(s.history, s.candidates, "music")) for s in samples]
    answers = [[codec.encode_answer(c) for c in s.candidates[:n]] for s, n in zip(samples, n_answers)]
    return collate(prompts, same_answer_count(answers, codec.pad_id), codec.pad_id)


def test_single_token_scoring_equals_the_packed_and_paper_layouts_values_and_gradients(tiny_text_model):
    from transformers import AutoModelForCausalLM

    d, splits = tiny_text_model
    samples = splits["valid"][:3]
    codec = hybrid(d, [t for s in samples for t in (*s.history, *s.candidates)])
    model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    batch = short_batch(codec, samples, [20, 7, 12])  # fewer answers: padding answers of one token
    assert batch.answer_ids.shape[-1] == 2 and not bool(batch.answer_mask[1, 7:, 1].any())
    grads = {}
    for name, fn in (
        ("short", answer_logprobs_short),
        ("packed", answer_logprobs_packed),
        ("paper", answer_logprobs_full),
    ):
        model.zero_grad()
        logps, counts = fn(model, batch)
        logps.sum().backward()
        grads[name] = (logps.detach(), counts, [p.grad.clone() for p in model.parameters()])
    for other in ("packed", "paper"):
        assert torch.allclose(grads["short"][0], grads[other][0], atol=1e-5)
        assert torch.equal(grads["short"][1], grads[other][1])
        for a, b in zip(grads["short"][2], grads[other][2]):
            assert torch.allclose(a, b, atol=1e-5)
    assert scoring_layout("packed", short_answers=True) is answer_logprobs_short
    assert scoring_layout("cache", short_answers=True) is not answer_logprobs_short


def test_the_history_readout_with_item_tokens_equals_the_plain_whole_row_reference(tiny_text_model):
    from conftest import history_readout_reference
    from transformers import AutoModelForCausalLM

    from sdporec.evaluation.scoring import LMScorer

    d, splits = tiny_text_model
    samples = splits["valid"][:2]
    codec = hybrid(d, [t for s in samples for t in (*s.history, *s.candidates)])
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).eval()
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    scores = LMScorer(model, codec, "music", progress=False).history_scores(samples)
    for s, row in zip(samples, scores):
        assert row == pytest.approx(history_readout_reference(model, codec, s), abs=1e-5)


def test_item_ids_sharing_a_title_share_one_token_and_audit_counts_them(tiny_text_model):
    from sdporec.data.samples import Sample
    from sdporec.evaluation.audit import audit

    d, _ = tiny_text_model
    # `prepare` names the second id of a shared title 'Title [item N]' (importers.distinct_titles).
    codec = hybrid(
        d,
        [
            "Chasing Amy (1997)",
            "Chasing Amy (1997) [item 268]",
            "Muse",
            "Muse [item]",
            "X",
            "X [item 007]",
            "X [item a-1]",
        ],
    )
    assert codec.titles == ["Chasing Amy (1997)", "Muse", "Muse [item]", "X"]  # only the importer's mark merges
    assert codec.title_id("Chasing Amy (1997) [item 268]") == codec.title_id("Chasing Amy (1997)")
    assert codec.title_id("X [item 007]") == codec.title_id("X [item a-1]") == codec.title_id("X")  # ids as spelled
    amy = codec.title_id("Chasing Amy (1997)")
    candidates = ["Muse", "Chasing Amy (1997) [item 268]"]
    assert codec.generated_candidate([amy, codec.eos_id], candidates) == "Chasing Amy (1997) [item 268]"
    assert codec.generated_candidate([codec.title_id("Muse [item]"), codec.eos_id], candidates) is None
    assert codec.generated_candidate([codec.eos_id, amy], candidates) is None
    sample = Sample(
        history=["Muse", "Chasing Amy (1997)"],
        candidates=["Chasing Amy (1997) [item 268]", "Muse [item]"],
        target="Muse [item]",
        key="s0",
    )
    assert audit([sample])["shared_titles"] == 1


def test_cooccurrence_rows_by_hand():
    """Positive PMI of items sharing a sequence, counted once per sequence: A-B twice, A-C once among 3 pair
    counts (6 with both directions), so PMI(A,B) = log(2·6/(3·2)) = log 2 = PMI(A,C); its positive part
    log 2 · (1, 1, 1)(1, 1, 1)ᵀ-like on A, B, C has the one positive eigenvalue √2·log 2 with (√2, 1, 1)/2."""
    from sdporec.models.item_rows import cooccurrence_rows, placed

    titles = ["A", "B", "C", "D", "E"]
    rows = cooccurrence_rows([["A", "B"], ["A", "B", "B"], ["C", "A", "Z"], ["D"]], titles)
    assert rows.shape == (5, 5)
    expected = (2**0.5 * math.log(2)) ** 0.5 * torch.tensor([2**0.5, 1, 1, 0, 0]) / 2
    gram = rows @ rows.T
    torch.testing.assert_close(gram, torch.outer(expected, expected), atol=1e-6, rtol=0)
    # With D-E, 8 pair counts: A-B-C's positive eigenvalue √2·log(8/3) ≈ 1.39 is below D-E's log 8 ≈ 2.08, so rank 1
    # keeps D-E's direction only.
    two = cooccurrence_rows([["A", "B"], ["A", "B", "B"], ["C", "A", "Z"], ["D", "E"]], titles, dim=1)
    assert two.shape == (5, 1) and two[:3].abs().sum() == 0 and (two[3:].abs() > 0).all()
    assert not cooccurrence_rows([["D"], ["E", "E"]], titles).any()  # nothing shared: no vector
    torch.testing.assert_close(placed(rows, 32) @ placed(rows, 32).T, gram, atol=1e-6, rtol=0)


def test_cooc_rows_are_the_mean_rows_moved_towards_items_that_share_users(tiny_text_model):
    from transformers import AutoModelForCausalLM

    from sdporec.models.item_rows import cooccurrence_rows, placed

    d, _ = tiny_text_model
    titles = ["Air Supply", "Muse", "The Nouthdos Mirrors", "Zed", "Yes"]
    # Two pairs that share sequences; "Yes" shares none.
    sequences = [["Air Supply", "Muse"], ["Muse", "Air Supply"], ["The Nouthdos Mirrors", "Zed"], ["Yes"]]
    got = {}
    for init in ("mean", "cooc"):
        codec = hybrid(d, titles)
        model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
        norm = model.get_input_embeddings().weight.detach().norm(dim=-1).mean()
        add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, init, sequences=sequences)
        got[init] = model.get_input_embeddings().weight[torch.tensor(codec.token_ids)].detach()
        torch.testing.assert_close(got[init].norm(dim=-1), norm.expand(5), atol=1e-4, rtol=0)
    at = {t: codec.titles.index(t) for t in titles}
    unit = {k: torch.nn.functional.normalize(v, dim=-1) for k, v in got.items()}
    # The unit mean row plus the unit co-occurrence vector (centred on the items that have one) in the model's
    # width, at the mean row's norm.
    cooc = cooccurrence_rows(sequences, codec.titles)
    has = torch.tensor([t != "Yes" for t in codec.titles])
    cooc[has] -= cooc[has].mean(0)
    cooc = torch.nn.functional.normalize(placed(cooc, got["mean"].shape[1]), dim=-1)
    expected = torch.nn.functional.normalize(unit["mean"] + cooc, dim=-1) * norm
    torch.testing.assert_close(got["cooc"], expected, atol=1e-4, rtol=0)

    def cosine(init, a, b):
        return float(unit[init][at[a]] @ unit[init][at[b]])

    # Air Supply and Muse share every sequence, so one co-occurrence vector, opposite to the other pair's.
    assert cosine("cooc", "Air Supply", "Muse") > cosine("mean", "Air Supply", "Muse") + 0.2
    assert cosine("cooc", "Air Supply", "Zed") < cosine("mean", "Air Supply", "Zed") - 0.2
    torch.testing.assert_close(got["cooc"][at["Yes"]], got["mean"][at["Yes"]], atol=1e-5, rtol=0)  # text only
    with pytest.raises(ValueError, match="needs the training sequences"):
        add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "cooc")
