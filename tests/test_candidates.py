from collections import Counter

from sdporec.data.candidates import (
    catalogue,
    draw_candidates,
    draw_negatives,
    paper_seeded_candidates,
    redraw,
    sample_rng,
)
from sdporec.data.samples import Sample

ITEMS = [f"item{i}" for i in range(100)]


def test_draw_candidates_properties():
    hist = ITEMS[:10]
    cands = draw_candidates(hist, "item50", ITEMS, 20, sample_rng(0, "x"))
    assert len(cands) == 20 and len(set(cands)) == 20 and "item50" in cands
    assert not set(cands) & set(hist)
    assert cands == draw_candidates(hist, "item50", ITEMS, 20, sample_rng(0, "x"))  # seeded
    assert cands != draw_candidates(hist, "item50", ITEMS, 20, sample_rng(0, "y"))


def test_target_position_is_uniform():
    pos = Counter(draw_candidates([], "item0", ITEMS, 20, sample_rng(i)).index("item0") for i in range(4000))
    assert len(pos) == 20 and min(pos.values()) > 120   # expected 200 each


def test_paper_seeding_leaks_the_target_and_per_sample_seeding_does_not():
    # The same target with two different histories gets nearly the same list under the paper's seeding.
    a = paper_seeded_candidates(["item1"], "item50", 50, ITEMS, 20)
    b = paper_seeded_candidates(["item2"], "item50", 50, ITEMS, 20)
    assert len(set(a) & set(b)) >= 17
    c = draw_candidates(["item1"], "item50", ITEMS, 20, sample_rng(0, "train:0"))
    d = draw_candidates(["item2"], "item50", ITEMS, 20, sample_rng(0, "train:1"))
    assert len(set(c) & set(d)) < 10


def test_redraw_changes_per_epoch_and_keeps_target():
    samples = [Sample(ITEMS[:3], ITEMS[3:23], "item7", None, f"train:{i}") for i in range(5)]
    e0, e1 = redraw(samples, ITEMS, 0, 0), redraw(samples, ITEMS, 0, 1)
    assert all(s.target in s.candidates and len(s.candidates) == 20 for s in e0 + e1)
    assert [s.candidates for s in e0] != [s.candidates for s in e1]
    assert [s.candidates for s in e0] == [s.candidates for s in redraw(samples, ITEMS, 0, 0)]


def test_negatives_come_from_the_sample_candidates():
    s = Sample(ITEMS[:3], ITEMS[3:23], "item7", None, "train:0")
    neg = draw_negatives(s, 3, 0, 0)
    assert len(set(neg)) == 3 and "item7" not in neg and set(neg) <= set(s.candidates)
    assert neg == draw_negatives(s, 3, 0, 0) and neg != draw_negatives(s, 3, 0, 1)


def test_catalogue_is_sorted_union():
    s = [Sample(["b"], ["c", "a"], "a"), Sample(["d"], ["a", "e"], "e")]
    assert catalogue(s) == ["a", "b", "c", "d", "e"]


def test_top_negatives_by_hand():
    from sdporec.data.candidates import top_negatives

    assert top_negatives(["a", "b", "c", "d"], [0.1, 0.9, 0.5, 0.9], 2) == [1, 3]   # ties: list order
    assert top_negatives(["a", "b"], [-1.0, -2.0], 1) == [0]


def test_popular_negatives_are_seeded_distinct_and_lean_to_popular_items():
    from sdporec.data.candidates import popular_negatives

    s = Sample(["h"], ["t", "pop", "a", "b", "c", "d"], "t", key="train:0")
    popularity = {"pop": 50}
    draws = [popular_negatives(s, 2, popularity, 0, epoch) for epoch in range(400)]
    assert all(len(set(d)) == 2 and "t" not in d and set(d) <= set(s.candidates) for d in draws)
    assert popular_negatives(s, 2, popularity, 0, 3) == draws[3]
    counts = Counter(c for d in draws for c in d)
    assert counts["pop"] > 390 and all(counts[c] < 250 for c in "abcd")   # uniform would give 160 each


def test_validation_subset_is_spread_over_users_and_the_same_for_every_run():
    from sdporec.data.candidates import validation_subset

    valid = [Sample(["h"], ["a", "b"], "a", user=f"u{i // 100}", key=f"valid:{i}") for i in range(1000)]
    subset = validation_subset(valid, 100)
    assert len(subset) == 100 and len({s.key for s in subset}) == 100
    assert len({s.user for s in subset}) == 10                      # every user, not the first file rows' one
    assert [int(s.key[6:]) for s in subset] == sorted(int(s.key[6:]) for s in subset)   # file order kept
    assert [s.key for s in validation_subset(valid, 100)] == [s.key for s in subset]  # same on every call
    assert validation_subset(valid, 0) == valid and validation_subset(valid, 5000) == valid
