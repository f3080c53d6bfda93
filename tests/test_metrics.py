import math

import pytest

from sdporec.data.samples import Sample
from sdporec.evaluation.evaluate import ranking_results
from sdporec.evaluation.metrics import (
    NonFiniteError,
    generation_metrics,
    parse_generation,
    rank_of_target,
    ranking_metrics,
)


def test_rank_of_target_breaks_ties_by_position():
    assert rank_of_target([0.1, 0.9, 0.5], 1) == 0
    assert rank_of_target([0.1, 0.9, 0.5], 0) == 2
    assert rank_of_target([1.0, 1.0, 1.0], 2) == 2   # constant scores earn nothing for a late target
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
    assert parse_generation("Air Supply", cands) is None      # two titles occur: invalid, as the paper counts
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
    assert paired_bootstrap([1.0, 0.0], [1.0, 0.0]) == (0.0, 0.0, 0.0)                            # identical
    import random
    rng = random.Random(1)
    a = [float(rng.random() < 0.55) for _ in range(4000)]
    b = [float(rng.random() < 0.50) for _ in range(4000)]
    diff, low, high = paired_bootstrap(a, b, resamples=4000, seed=3)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    std = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5
    half = 1.959964 * std / len(d) ** 0.5             # the normal approximation, an independent reference
    assert diff == pytest.approx(mean) and low < diff < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1) and (low + high) / 2 == pytest.approx(mean, abs=0.1 * half)
    assert paired_bootstrap(a, b, resamples=4000, seed=3) == (diff, low, high)                    # seeded
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
