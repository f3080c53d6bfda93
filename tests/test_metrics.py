import math

import pytest

from sdporec.data.samples import Sample
from sdporec.evaluation.metrics import (
    NonFiniteError,
    generation_metrics,
    parse_generation,
    rank_of_target,
    ranking_metrics,
)
from sdporec.evaluation.scoring import ranking_results


def test_rank_of_target_breaks_ties_by_position():
    assert rank_of_target([0.1, 0.9, 0.5], 1) == 0
    assert rank_of_target([0.1, 0.9, 0.5], 0) == 2
    assert rank_of_target([1.0, 1.0, 1.0], 2) == 2  # constant scores earn nothing for a late target
    assert rank_of_target([1.0, 1.0, 1.0], 0) == 0


def test_ranking_metrics_hand_computed():
    m = ranking_metrics([0, 1, 4, 9])
    assert m["hr@1"] == 0.25
    assert m["hr@5"] == 0.75
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 4)
    assert m["valid_ratio"] == 1.0 and m["n"] == 4


def test_generation_protocol():
    cands = ["Air", "Air Supply", "Muse"]
    assert parse_generation("I think Muse.", cands) == "Muse"
    assert parse_generation("Air Supply", cands) is None  # two titles occur: invalid, as the paper counts
    assert parse_generation("nothing here", cands) is None
    m = generation_metrics(["Muse", None, "Air", "Muse"], ["Muse", "Muse", "Muse", "Air"])
    assert m["hr@1"] == 0.25 and m["valid_ratio"] == 0.75 and m["n"] == 4


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        ranking_metrics([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_scores_that_are_not_finite_are_an_error(bad):
    # A NaN compares false with everything: without the check the target would rank first.
    with pytest.raises(NonFiniteError, match="finite"):
        rank_of_target([0.5, bad, 0.1], 0)
    sample = Sample(["h"], ["a", "b", "c"], "a", key="eval:7", row="line 8")
    with pytest.raises(NonFiniteError, match=r"sample eval:7 \(row line 8 of its file\): candidate 'b' has score"):
        ranking_results([sample], [[0.5, bad, 0.1]])


def test_per_sample_metrics_average_to_the_metrics():
    from sdporec.evaluation.metrics import per_sample_metrics

    ranks = [0, 1, 4, 9, 12]
    per = per_sample_metrics([{"key": str(i), "rank": r} for i, r in enumerate(ranks)])
    whole = ranking_metrics(ranks)
    assert {m: sum(v) / len(v) for m, v in per.items()} == pytest.approx({m: whole[m] for m in per})
    gen = per_sample_metrics(
        [{"hit": True, "valid": True}, {"hit": False, "valid": True}, {"hit": False, "valid": False}]
    )
    assert gen == {"hr@1": [1.0, 0.0, 0.0], "valid_ratio": [1.0, 1.0, 0.0]}


def test_paired_bootstrap_by_hand_and_against_the_normal_approximation():
    from sdporec.evaluation.metrics import paired_bootstrap

    assert paired_bootstrap([1.0, 0.5, 0.0], [0.5, 0.0, -0.5]) == pytest.approx((0.5, 0.5, 0.5))  # constant gap
    assert paired_bootstrap([1.0, 0.0], [1.0, 0.0]) == (0.0, 0.0, 0.0)  # identical
    import random

    rng = random.Random(1)
    a = [float(rng.random() < 0.55) for _ in range(4000)]
    b = [float(rng.random() < 0.50) for _ in range(4000)]
    diff, low, high = paired_bootstrap(a, b, resamples=4000, seed=3)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    std = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5
    half = 1.959964 * std / len(d) ** 0.5  # the normal approximation, an independent reference
    assert diff == pytest.approx(mean) and low < diff < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1) and (low + high) / 2 == pytest.approx(mean, abs=0.1 * half)
    assert paired_bootstrap(a, b, resamples=4000, seed=3) == (diff, low, high)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_a_cluster_bootstrap_draws_each_cluster_whole():
    from sdporec.evaluation.metrics import paired_bootstrap

    # Two clusters, each with mean gap 0.5 and two elements: every resample's mean is 0.5 exactly.
    a, b = [1.0, 0.0, 1.0, 0.0], [0.0] * 4
    assert paired_bootstrap(a, b, 300, 1, clusters=["x", "x", "y", "y"]) == pytest.approx((0.5, 0.5, 0.5))
    diff, low, high = paired_bootstrap(a, b, 300, 1)  # elements drawn alone: the draws spread
    assert diff == 0.5 and low < 0.5 < high
    import random

    rng = random.Random(2)  # 2,000 test samples, each measured twice with nearly the same gap (two seeds)
    gaps = [float(rng.random() < 0.55) - float(rng.random() < 0.45) for _ in range(2000)]
    d = [g if rng.random() < 0.9 else 0.0 for g in gaps for _ in range(2)]
    labels = [i for i in range(2000) for _ in range(2)]
    diff, low, high = paired_bootstrap(d, [0.0] * len(d), resamples=4000, seed=5, clusters=labels)
    mean = sum(d) / len(d)
    sums = [d[2 * i] + d[2 * i + 1] - 2 * mean for i in range(2000)]
    half = 1.959964 * (sum(x * x for x in sums) * 2000 / 1999) ** 0.5 / len(d)  # cluster-robust normal approx.
    assert diff == pytest.approx(mean) and (high - low) / 2 == pytest.approx(half, rel=0.1)
    _, low1, high1 = paired_bootstrap(d, [0.0] * len(d), resamples=4000, seed=5)  # as if independent: narrower
    assert (high - low) / (high1 - low1) == pytest.approx(2**0.5, rel=0.12)
    with pytest.raises(ValueError, match=r"^paired_bootstrap's clusters has 3 labels for 4 elements$"):
        paired_bootstrap(a, b, clusters=[1, 2, 3])


def test_per_sample_shares_are_exact_at_the_cut_offs():
    from sdporec.evaluation.metrics import per_sample_metrics

    per = per_sample_metrics([{"key": str(r), "rank": r} for r in (0, 1, 4, 5, 9, 10)])
    assert per["hr@1"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0] and per["hr@5"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert per["ndcg@5"] == [1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0, 0.0, 0.0]
    assert per["ndcg@10"] == [1.0, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(7), 1 / math.log2(11), 0.0]
    assert per["mrr"] == [1.0, 1 / 2, 1 / 5, 1 / 6, 1 / 10, 1 / 11]
    assert per_sample_metrics([{"key": "a", "rank": 7}]) == {
        "hr@1": [0.0],
        "hr@5": [0.0],
        "ndcg@5": [0.0],
        "ndcg@10": [1 / math.log2(9)],
        "mrr": [1 / 8],
    }


def test_one_sample_is_enough_and_none_is_an_error_by_name():
    from sdporec.evaluation.metrics import paired_bootstrap

    assert generation_metrics(["x"], ["x"])["hr@1"] == 1.0 and ranking_metrics([0])["hr@1"] == 1.0
    for empty in (lambda: generation_metrics([], []), lambda: ranking_metrics([])):
        with pytest.raises(ValueError, match="^no samples to measure$"):
            empty()
    with pytest.raises(ValueError, match="^paired_bootstrap needs two equally long, non-empty lists$"):
        paired_bootstrap([], [])


@pytest.mark.parametrize("resamples, level", [(200, 0.95), (450, 0.9), (1000, 1.0), (257, 0.5)])
def test_paired_bootstrap_equals_an_independent_percentile_bootstrap(resamples, level):
    """The same seeded draws made in one call (the function draws in chunks to bound memory), then the
    percentile interval by hand: the chunking, the draw count and the interval's ends must all be right."""
    import random

    import torch

    from sdporec.evaluation.metrics import paired_bootstrap

    rng = random.Random(7)
    a, b = [rng.random() for _ in range(37)], [rng.random() for _ in range(37)]
    diffs = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    draws = torch.randint(37, (resamples, 37), generator=torch.Generator().manual_seed(5))
    means = sorted(diffs[draws].mean(1).tolist())
    tail = (1 - level) / 2
    expected = (
        diffs.mean().item(),
        means[int(tail * resamples)],
        means[min(resamples - 1, int((1 - tail) * resamples))],
    )
    assert paired_bootstrap(a, b, resamples, seed=5, level=level) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if level == 1.0:  # the whole range of the bootstrap means
        assert expected[1:] == (means[0], means[-1])


def test_generation_metrics_have_every_key_and_no_ranking_numbers():
    from sdporec.evaluation.metrics import METRIC_KEYS

    got = generation_metrics(["a", None, "c"], ["a", "b", "x"])
    assert got == {
        "hr@1": 1 / 3,
        "hr@5": None,
        "ndcg@5": None,
        "ndcg@10": None,
        "mrr": None,
        "valid_ratio": 2 / 3,
        "n": 3,
    }
    assert tuple(got) == METRIC_KEYS == tuple(ranking_metrics([0]))


def test_paired_bootstrap_defaults_are_compares():
    import random

    from sdporec.commands.compare import CompareConfig
    from sdporec.evaluation.metrics import paired_bootstrap

    rng = random.Random(2)
    a, b = [rng.random() for _ in range(40)], [rng.random() for _ in range(40)]
    cfg = CompareConfig()
    assert (cfg.resamples, cfg.seed) == (2000, 0)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b, resamples=2000, seed=0, level=0.95)
    assert paired_bootstrap(a, b) != paired_bootstrap(a, b, resamples=2000, seed=1)
    assert paired_bootstrap(a, b) != paired_bootstrap(a, b, resamples=2001, seed=0)
