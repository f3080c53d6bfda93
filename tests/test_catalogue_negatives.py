"""Negatives drawn from the whole catalogue for the next-item task: by popularity, and the reference model's top K
outside the history and target (titles sharing an item token one item), checked against a model loaded apart."""

from collections import Counter

import pytest
import torch
from test_next_item import FAST

from sdporec.cli import main
from sdporec.data.candidates import popular_catalogue_negatives
from sdporec.data.samples import Sample, read_samples


def test_popular_catalogue_negatives_are_outside_the_history_and_favour_popular_items():
    items = [f"i{n}" for n in range(30)]
    weights = [1 + (100 if t == "i7" else 0) for t in items]
    cum = [sum(weights[: n + 1]) for n in range(len(items))]
    sample = Sample(["i1", "i2"], [], "i3", key="k")
    drawn = [popular_catalogue_negatives(sample, 3, items, cum, 0, epoch) for epoch in range(200)]
    assert all(len(set(d)) == 3 and not set(d) & {"i1", "i2", "i3"} for d in drawn)
    counts = Counter(t for d in drawn for t in d)
    assert counts["i7"] > 150 and counts["i7"] > 5 * max(c for t, c in counts.items() if t != "i7")
    assert drawn[0] == popular_catalogue_negatives(sample, 3, items, cum, 0, 0) != drawn[1]
    with pytest.raises(ValueError, match="fewer than K"):
        popular_catalogue_negatives(Sample(items[:28], [], items[28], key="x"), 2, items, cum, 0, 0)


def test_hardest_items_are_the_top_k_outside_the_excluded_ties_by_catalogue_order():
    from sdporec.training.preference import hardest_items

    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.3], [2.0, 1.0, 1.0, 1.0, 0.0]])
    assert hardest_items(scores, [[1], [0, 2]], 3) == [[3, 2, 4], [1, 3, 4]]
    assert hardest_items(scores, [[], []], 2) == [[1, 3], [0, 1]]
    assert scores[0, 1] == 0.9  # the scores are left as they were
    with pytest.raises(ValueError, match="3 catalogue items outside its history and target, fewer than K=4"):
        hardest_items(scores, [[0], [0, 1]], 4)


def test_titles_that_share_an_item_token_are_one_item_never_a_negative_of_themselves():
    """A pretrained LM's item tokens: "X" and "X [item 5]" name one token, so the column appears once, under its
    first title, and a target or history item named either way is excluded under both names."""
    from sdporec.training.preference import _one_title_per_token, hardest_negatives

    titles = ["A", "B", "X", "X [item 5]", "Y", "Z"]
    ids, named = _one_title_per_token(titles, [10, 11, 12, 12, 13, 14])
    assert ids == [10, 11, 12, 13, 14] and named == ["A", "B", "X", "Y", "Z"]
    token = dict(zip(titles, [10, 11, 12, 12, 13, 14]))
    scores = torch.tensor([[0.0, 1.0, 9.0, 2.0, 3.0], [5.0, 1.0, 9.0, 2.0, 3.0]])
    samples = [Sample(["A"], [], "X [item 5]"), Sample(["X"], [], "B")]
    assert hardest_negatives(scores, samples, token.__getitem__, ids, named, 2) == [["Z", "Y"], ["A", "Z"]]


def test_next_item_model_negatives_are_the_references_top_of_the_whole_catalogue(tmp_path, monkeypatch):
    """Item tokens: each epoch, the K items of the training catalogue outside the history and target that the SFT
    model scores highest after the epoch's prompt, checked against every item's logit from a model loaded apart."""
    from sdporec.data.prompts import training_prompt
    from sdporec.models.loading import load_model
    from sdporec.training.preference import PreferenceRecipe

    assert main(["prepare", "--out", str(tmp_path / "d"), "--users", "40", "--items", "30", "--genres", "3"]) == 0
    data = ["--train", str(tmp_path / "d" / "train.jsonl"), "--valid", str(tmp_path / "d" / "valid.jsonl")]
    assert main(["sft", "--task", "next-item", "--epochs", "1", *data, *FAST, "--out", str(tmp_path / "sft")]) == 0
    seen = []
    original = PreferenceRecipe.hardest_of_catalogue

    def spy(self, epoch, samples):
        negatives = original(self, epoch, samples)
        seen.append((epoch, list(samples), negatives))
        return negatives

    monkeypatch.setattr(PreferenceRecipe, "hardest_of_catalogue", spy)
    sdpo = ["sdpo", "--model", str(tmp_path / "sft" / "model"), "--negatives-from", "model", "--epochs", "2"]
    sdpo += ["--lr", "0.05"]  # the policy moves far from the reference in an epoch: scoring with it would show
    assert main([*sdpo, *data, "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "sdpo")]) == 0
    assert [epoch for epoch, _, _ in seen] == [0, 1]
    items = sorted({t for s in read_samples(tmp_path / "d" / "train.jsonl") for t in (*s.history, *s.candidates)})

    def top(model_dir, s, epoch):
        model, codec = load_model(str(model_dir))
        prompt = torch.tensor([codec.encode_prompt(training_prompt(s, "music", 0, epoch, "next-item"))])
        with torch.no_grad():
            logits = model(input_ids=prompt).logits[0, -1]
        others = [t for t in items if t not in {*s.history, s.target}]
        return sorted(others, key=lambda t: -float(logits[codec.title_id(t)]))[:3]

    for epoch, samples, negatives in seen:
        assert all(negatives[s.key] == top(tmp_path / "sft" / "model", s, epoch) for s in samples[:8])
    _, samples, negatives = seen[1]
    assert any(negatives[s.key] != top(tmp_path / "sdpo" / "model", s, 1) for s in samples[:8])  # not the policy
