"""Constrained generation: the answer trie against hand values, and decoding through it never leaves the sample's
candidates (a property over random samples, on a random text model that alone almost never names one), taking
the greedy path among them."""

import random

import pytest
import torch

from sdporec.data.prompts import build_prompt
from sdporec.data.samples import Sample
from sdporec.evaluation.constrained import AnswerTrie
from sdporec.evaluation.evaluate import evaluate_generation


def test_the_trie_allows_what_continues_an_answer_and_reads_the_title_back():
    trie = AnswerTrie([("ab", [1, 2, 9]), ("ac", [1, 3, 9]), ("d", [4, 9])])
    assert sorted(trie.allowed([])) == [1, 4] and sorted(trie.allowed([1])) == [2, 3]
    assert trie.allowed([1, 2]) == [9] and trie.allowed([1, 2, 9]) == [] and trie.allowed([7]) == []
    assert trie.title([1, 3, 9, 0, 0]) == "ac" and trie.title([4, 9]) == "d"
    assert trie.title([1, 3]) is None and trie.title([5, 9]) is None and trie.longest == 3


def _text_model(tiny_text_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.data.codec import TextCodec

    d, splits = tiny_text_model
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).float().eval()
    return model, TextCodec(AutoTokenizer.from_pretrained(str(d / "model"))), splits


def _random_samples(splits, n: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    pool = sorted({t for s in splits["train"] for t in (*s.history, *s.candidates)})
    out = []
    for i in range(n):
        titles = rng.sample(pool, 3 + rng.randint(2, 8))
        out.append(Sample(titles[:3], titles[3:], rng.choice(titles[3:]), key=f"r{i}"))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_generation_only_ever_names_a_candidate(tiny_text_model, seed):
    model, codec, splits = _text_model(tiny_text_model)
    asked = _random_samples(splits, 6, seed)
    free, _ = evaluate_generation(model, codec, asked, "music", 3, max_new_tokens=8, progress=False)
    metrics, rows = evaluate_generation(model, codec, asked, "music", 3, progress=False, constrained=True)
    assert free["valid_ratio"] < 1  # a random model alone wanders off the list
    assert metrics["valid_ratio"] == 1.0
    for s, row in zip(asked, rows):
        assert row["answer"] in s.candidates and row["hit"] == (row["answer"] == s.target)


def test_constrained_generation_takes_the_greedy_path_among_the_candidates(tiny_llama):
    model, codec = tiny_llama
    titles = [f"Artist {i}" for i in range(40)]
    asked = [Sample(titles[i : i + 3], titles[10:30], titles[10 + i], key=f"s{i}") for i in range(4)]
    _, rows = evaluate_generation(model, codec, asked, "music", 2, progress=False, constrained=True)
    for s, row in zip(asked, rows):
        prompt = torch.tensor([codec.encode_prompt(build_prompt(s.history, s.candidates, "music", 0))])
        with torch.no_grad():
            last = model(prompt).logits[0, -1]
        first = {codec.encode_answer(c)[0]: c for c in s.candidates}  # one token per title here
        assert row["answer"] == first[max(first, key=lambda t: float(last[t]))]


def test_constrained_needs_the_generation_protocol(tmp_path, capsys):
    from sdporec.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text('{"historyList": ["a"], "itemList": ["b", "c"], "trueSelection": "b"}\n')
    assert main(["evaluate", "--model", "m", "--data", str(data), "--out", str(tmp_path / "o"), "--constrained"]) == 2
    assert "setting 'constrained': needs --protocol generation" in capsys.readouterr().err


def test_beams_over_every_candidate_order_them_as_ranking_does(tiny_llama):
    from sdporec.evaluation.scoring import LMScorer

    model, codec = tiny_llama
    titles = [f"Artist {i}" for i in range(40)]
    asked = [
        Sample(titles[i : i + 3], titles[10 + 2 * i : 16 + 2 * i], titles[11 + 2 * i], key=f"s{i}") for i in range(3)
    ]
    metrics, rows = evaluate_generation(model, codec, asked, "music", 2, progress=False, constrained=True, beams=6)
    scores = LMScorer(model, codec, "music", batch_size=2, progress=False)(asked)
    for s, row, sc in zip(asked, rows, scores):
        by_score = [c for _, c in sorted(zip(sc, s.candidates), key=lambda x: -x[0])]
        assert row["beams"] == by_score and row["answer"] == by_score[0]  # every answer is 2 tokens long here
    assert metrics["hr@5"] == sum(r["target"] in r["beams"][:5] for r in rows) / 3


def test_beams_need_constrained_and_enough_candidates(tmp_path, capsys):
    from sdporec.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text('{"historyList": ["a"], "itemList": ["b", "c"], "trueSelection": "b"}\n')
    base = ["evaluate", "--model", "m", "--data", str(data), "--out", str(tmp_path / "o"), "--protocol", "generation"]
    assert main([*base, "--beams", "2"]) == 2
    assert "setting 'beams': needs --constrained" in capsys.readouterr().err
    assert main([*base, "--beams", "3", "--constrained", "--model", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert "d.jsonl" in err and "2 candidates, fewer than --beams 3" in err, err
