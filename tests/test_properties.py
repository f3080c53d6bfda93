"""Invariants no list of examples covers, checked on generated inputs (hypothesis): the losses, the ranking
metrics, candidate draws, item-id import and titles through prompts, files and answer parsing."""

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sdporec.data.candidates import draw_candidates, draw_negatives, sample_rng
from sdporec.data.importers import read_interaction_log
from sdporec.data.prompts import build_prompt
from sdporec.data.samples import SEP, Sample, read_samples, write_samples
from sdporec.errors import DataError
from sdporec.evaluation.metrics import parse_generation, ranking_metrics
from sdporec.training.losses import dpo_loss, sdpo_loss

# The CPU may be shared with a benchmark: no per-example deadline.
PROPERTY = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
reward = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def rewards(k):
    return st.tuples(reward, st.lists(reward, min_size=k, max_size=k))


def loss_of(chosen, rejected, fn=sdpo_loss, beta=1.0):
    """The loss with the reference at 0, so rewards are beta times the policy's log-probs."""
    c = torch.tensor([chosen], dtype=torch.float64)
    r = torch.tensor([rejected], dtype=torch.float64)
    return fn(c, r, torch.zeros_like(c), torch.zeros_like(r), beta)[0][0].item()


@PROPERTY
@given(rewards(1), st.floats(0.01, 10))
def test_sdpo_with_one_negative_is_dpo(r, beta):
    chosen, (rejected,) = r
    assert loss_of(chosen, [rejected], sdpo_loss, beta) == pytest.approx(
        loss_of(chosen, [rejected], dpo_loss, beta), rel=1e-9, abs=1e-12
    )
    # and both are -log sigmoid(beta (w - l)), here computed stably by hand
    x = beta * (chosen - rejected)
    assert loss_of(chosen, [rejected], sdpo_loss, beta) == pytest.approx(
        math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x)), rel=1e-9, abs=1e-12
    )


@PROPERTY
@given(st.integers(1, 6).flatmap(rewards), st.randoms(use_true_random=False))
def test_sdpo_is_finite_nonnegative_and_blind_to_the_order_of_negatives(r, rng):
    chosen, rejected = r
    shuffled = list(rejected)
    rng.shuffle(shuffled)
    a, b = loss_of(chosen, rejected), loss_of(chosen, shuffled)
    assert math.isfinite(a) and a >= 0
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


@PROPERTY
@given(st.integers(1, 6).flatmap(rewards), st.floats(1e-3, 50))
def test_sdpo_falls_as_the_chosen_reward_rises(r, step):
    chosen, rejected = r
    low, high = loss_of(chosen, rejected), loss_of(chosen + step, rejected)
    assert high <= low
    # strictly while the loss is not yet rounded to 0 or saturated
    if 1e-12 < high and low < 1e3:
        assert high < low


ranks = st.lists(st.integers(0, 19), min_size=1, max_size=50)


@PROPERTY
@given(ranks)
def test_ranking_metrics_bounded_monotone_and_exact_at_the_boundaries(rs):
    m = ranking_metrics(rs)
    n = len(rs)
    for key in ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr"):
        assert 0 <= m[key] <= 1
    assert m["hr@1"] <= m["hr@5"] and m["ndcg@5"] <= m["ndcg@10"] and m["ndcg@5"] <= m["hr@5"]
    assert m["hr@1"] == sum(r == 0 for r in rs) / n
    assert m["hr@5"] == sum(r <= 4 for r in rs) / n  # rank 4 (the 5th) counts, rank 5 does not
    assert m["ndcg@5"] == pytest.approx(sum(1 / math.log2(r + 2) for r in rs if r <= 4) / n)
    assert m["mrr"] == pytest.approx(sum(1 / (r + 1) for r in rs) / n)


@PROPERTY
@given(st.integers(0, 19))
def test_one_sample_at_each_rank(r):
    m = ranking_metrics([r])
    assert m["hr@5"] == (1.0 if r < 5 else 0.0) and m["hr@1"] == (1.0 if r == 0 else 0.0)
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(r + 2) if r < 5 else 0.0)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(r + 2) if r < 10 else 0.0)


catalogues = st.lists(st.text(min_size=1, max_size=12), min_size=25, max_size=80, unique=True)


@PROPERTY
@given(catalogues, st.data())
def test_drawn_candidates(items, data):
    history = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=5, unique=True))
    target = data.draw(st.sampled_from([t for t in items if t not in history]))
    n = data.draw(st.integers(2, min(20, len(items) - len(history))))
    seed = data.draw(st.text(max_size=6))
    got = draw_candidates(history, target, items, n, sample_rng(seed, "x"))
    assert len(got) == n == len(set(got)) and target in got and not set(got) & set(history)
    assert set(got) <= set(items)
    assert draw_candidates(history, target, items, n, sample_rng(seed, "x")) == got  # reproducible
    others = [draw_candidates(history, target, items, n, sample_rng(seed + f"/{i}", "x")) for i in range(8)]
    if len(items) - len(history) > n + 5:
        assert any(o != got for o in others)  # seeds differ


@PROPERTY
@given(catalogues, st.integers(1, 5), st.integers(0, 3))
def test_drawn_negatives_come_from_the_list_and_never_are_the_target(items, k, epoch):
    sample = Sample(items[:3], items[3:23], items[5], key="train:1")
    got = draw_negatives(sample, k, 0, epoch)
    assert len(set(got)) == k and sample.target not in got and set(got) <= set(sample.candidates)
    assert draw_negatives(sample, k, 0, epoch) == got


item_ids = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=',"\r\n'),
        min_size=1,
        max_size=6,
    ),
    min_size=2,
    max_size=25,
    unique=True,
)


@PROPERTY
@given(item_ids)
def test_any_item_ids_import_to_as_many_distinct_titles(tmp_path_factory, ids):
    assume(all(i == i.strip() for i in ids))
    d = tmp_path_factory.mktemp("ids")
    (d / "items.csv").write_text(
        "item,title\n" + "".join(f"{i},Title {k}\n" for k, i in enumerate(ids)), encoding="utf-8"
    )
    rows = ["user,item,timestamp"] + [f"u{k % 3},{i},{k}" for k, i in enumerate(ids)]
    (d / "inter.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = read_interaction_log(d / "inter.csv", d / "items.csv")
    assert len(data.item_ids) == len(set(data.item_ids.values())) == len(ids)
    titles = [t for seq in data.sequences.values() for t in seq]
    assert sorted(titles) == sorted(f"Title {k}" for k in range(len(ids)))
    for u in range(3):  # every user's interactions in time order, each with its own title
        assert data.sequences.get(f"u{u}", []) == [f"Title {k}" for k in range(len(ids)) if k % 3 == u]


titles = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda t: t.strip() == t and SEP not in t
)


@PROPERTY
@given(st.lists(titles, min_size=4, max_size=12, unique=True), st.sampled_from(["music", "movies", "books"]))
def test_any_title_round_trips_through_prompt_file_and_answer(tmp_path_factory, names, domain):
    history, candidates = names[:2], names[2:]
    prompt = build_prompt(history, candidates, domain)
    shown = [t for kind, t in prompt.pieces if kind == "title"]
    assert shown == history + candidates and [prompt.pieces[i][1] for i in prompt.history] == history
    path = tmp_path_factory.mktemp("titles") / "s.jsonl"
    sample = Sample(history, candidates, candidates[0])
    write_samples(path, [sample])
    assert read_samples(path) == [sample]
    # The paper's parse: the answer is valid when exactly one candidate occurs in it.
    target = candidates[-1]
    inside = [c for c in candidates if c in target]
    assert parse_generation(target, candidates) == (target if inside == [target] else None)
    assert parse_generation(f"The answer: {target}.", candidates) == (
        target
        if inside == [target] and not any(c in f"The answer: {target}." for c in candidates if c != target)
        else None
    )


@PROPERTY
@given(st.lists(titles, min_size=3, max_size=6, unique=True))
def test_a_title_with_the_separator_is_refused_by_name(tmp_path_factory, names):
    path = tmp_path_factory.mktemp("sep") / "s.jsonl"
    bad = names[0] + SEP + "x"
    write_samples(path, [Sample([bad], names[1:], names[1])])
    with pytest.raises(DataError, match="contains '::'") as e:
        read_samples(path)
    assert str(path) in str(e.value) and e.value.field == "historyList"
