import math

import pytest

from sdporec.evaluate import ranking_results
from sdporec.metrics import NonFiniteError, generation_metrics, parse_generation, rank_of_target, ranking_metrics
from sdporec.samples import Sample


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
