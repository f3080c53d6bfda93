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
    assert len(pos) == 20 and min(pos.values()) > 120  # expected 200 each


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

    assert top_negatives(["a", "b", "c", "d"], [0.1, 0.9, 0.5, 0.9], 2) == [1, 3]  # ties: list order
    assert top_negatives(["a", "b"], [-1.0, -2.0], 1) == [0]


def test_popular_negatives_are_seeded_distinct_and_lean_to_popular_items():
    from sdporec.data.candidates import popular_negatives

    s = Sample(["h"], ["t", "pop", "a", "b", "c", "d"], "t", key="train:0")
    popularity = {"pop": 50}
    draws = [popular_negatives(s, 2, popularity, 0, epoch) for epoch in range(400)]
    assert all(len(set(d)) == 2 and "t" not in d and set(d) <= set(s.candidates) for d in draws)
    assert popular_negatives(s, 2, popularity, 0, 3) == draws[3]
    counts = Counter(c for d in draws for c in d)
    assert counts["pop"] > 390 and all(counts[c] < 250 for c in "abcd")  # uniform would give 160 each


def test_validation_subset_is_spread_over_users_and_the_same_for_every_run():
    from sdporec.data.candidates import validation_subset

    valid = [Sample(["h"], ["a", "b"], "a", user=f"u{i // 100}", key=f"valid:{i}") for i in range(1000)]
    subset = validation_subset(valid, 100)
    assert len(subset) == 100 and len({s.key for s in subset}) == 100
    assert len({s.user for s in subset}) == 10  # every user, not the first file rows' one
    assert [int(s.key[6:]) for s in subset] == sorted(int(s.key[6:]) for s in subset)  # file order kept
    assert [s.key for s in validation_subset(valid, 100)] == [s.key for s in subset]  # same on every call
    assert validation_subset(valid, 0) == valid and validation_subset(valid, 5000) == valid


# The seeds are part of the contract: a run re-draws the same lists and negatives in every version, process
# and Python. Each draw is checked against `random.Random` seeded by the documented string, by hand.
def test_every_draw_is_seeded_by_its_documented_string():
    import random

    s = Sample(["item1", "item2"], [f"item{i}" for i in range(10, 30)], "item12", user="u7", key="train:3")
    assert sample_rng(4, "x", "train:3", 2).random() == random.Random("4:x:train:3:2").random()
    pool = [c for c in s.candidates if c != s.target]
    assert draw_negatives(s, 3, 4, 2) == random.Random("4:negatives:train:3:2").sample(pool, 3)
    (again,) = redraw([s], ITEMS, 4, 2)
    assert again.candidates == draw_candidates(s.history, s.target, ITEMS, 20, random.Random("4:candidates:train:3:2"))
    assert (again.history, again.target, again.user, again.key) == (s.history, s.target, "u7", "train:3")


def test_popular_negatives_are_efraimidis_spirakis_keys_by_hand():
    import random

    from sdporec.data.candidates import popular_negatives

    s = Sample(["item1"], [f"item{i}" for i in range(10, 20)], "item12", key="train:5")
    popularity = {"item10": 9, "item11": 3, "item13": 0, "item14": 40}  # the rest: never a target (0)
    rng = random.Random("1:popular negatives:train:5:0")
    pool = [c for c in s.candidates if c != s.target]
    keys = {c: rng.random() ** (1.0 / (1 + popularity.get(c, 0))) for c in pool}
    assert popular_negatives(s, 4, popularity, 1, 0) == sorted(pool, key=lambda c: -keys[c])[:4]


def test_pool_sizes_at_the_boundary():
    import pytest

    from sdporec.data.candidates import popular_negatives

    history, items = ["a", "b"], list("abcdefg")  # 4 titles outside the history and target "c"
    got = draw_candidates(history, "c", items, 5, sample_rng(0))
    assert sorted(got) == list("cdefg")  # exactly enough: all of them
    with pytest.raises(ValueError, match=r"^only 4 items outside the history; cannot draw 5 negatives$"):
        draw_candidates(history, "c", items, 6, sample_rng(0))
    s = Sample(["a"], ["b", "c", "d"], "c", key="train:9")
    assert sorted(draw_negatives(s, 2, 0, 0)) == ["b", "d"]
    assert sorted(popular_negatives(s, 2, {}, 0, 0)) == ["b", "d"]
    for draw in (lambda: draw_negatives(s, 3, 0, 0), lambda: popular_negatives(s, 3, {}, 0, 0)):
        with pytest.raises(ValueError, match=r"^sample train:9 has 2 non-target candidates, fewer than K=3$"):
            draw()


def test_paper_seeding_by_hand():
    import random

    history, items = ["item3", "item4"], ITEMS[:30]
    got = paper_seeded_candidates(history, "item7", 7, items, 20)
    rng = random.Random(7)
    expected = rng.sample([t for t in items if t not in {"item3", "item4", "item7"}], 19) + ["item7"]
    rng.shuffle(expected)
    assert got == expected and len(got) == 20 and not set(got) & set(history)


def test_require_redrawable_and_require_negatives_name_file_row_and_field():
    import pytest

    from sdporec.data.candidates import require_negatives, require_redrawable
    from sdporec.errors import DataError

    train = [Sample(["a", "b"], ["c", "d", "e"], "c", row="line 1"), Sample(["e"], ["a", "b", "d"], "d", row="line 2")]
    require_redrawable("t.jsonl", train)  # 5 titles: 2 outside each list's history and target, as needed
    long = Sample(["a", "b"], ["c", "d", "e", "a"], "c", row="line 3")
    with pytest.raises(
        DataError,
        match=r"^file t\.jsonl, row line 3, field 'itemList': 4 candidates, but only 2 "
        r"titles of the training file lie outside this history to re-draw them from; "
        r"add --keep-candidates to train on the file's lists as they are$",
    ):
        require_redrawable("t.jsonl", [*train, long])
    require_negatives("t.jsonl", train, 2)
    with pytest.raises(
        DataError,
        match=r"^file t\.jsonl, row line 1, field 'itemList': 2 non-target candidates, "
        r"fewer than the 3 negatives asked for \(--negatives\)$",
    ):
        require_negatives("t.jsonl", train, 3)


def test_validation_subset_by_hand():
    import random

    from sdporec.data.candidates import validation_subset

    valid = [Sample(["a"], ["b", "c"], "b", key=f"valid:{i}") for i in range(50)]
    chosen = sorted(random.Random("validation subset:50:7").sample(range(50), 7))
    # Keys, not samples: samples compare by content and these all ask the same question.
    assert [s.key for s in validation_subset(valid, 7)] == [valid[i].key for i in chosen]
    assert validation_subset(valid, 0) == validation_subset(valid, 50) == validation_subset(valid, 80) == valid


def test_a_repeated_title_in_the_catalogue_is_drawn_and_counted_once():
    import signal

    import pytest

    from sdporec.data.synthetic import sequences_to_samples

    def hang(*_):
        raise TimeoutError("the draw did not stop: the repeated title was counted twice")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        samples = [Sample(ITEMS[:3], ITEMS[3:23], "item7", None, f"train:{i}") for i in range(20)]
        repeated = ITEMS + ["item50"] * 900  # would be in nearly every list if drawn per copy
        assert redraw(samples, repeated, 0, 0) == redraw(samples, ITEMS, 0, 0)
        seqs = {"u": ITEMS[:12]}
        assert sequences_to_samples(seqs, ["u"], repeated, "train", 0) == sequences_to_samples(
            seqs, ["u"], ITEMS, "train", 0
        )
        # 4 distinct titles outside history and target: 5 negatives cannot be drawn, however often "d" repeats.
        few = [Sample(["a", "b"], list("cdefgh"), "c", None, "train:0")]
        with pytest.raises(ValueError, match=r"^only 4 items outside the history; cannot draw 5 negatives$"):
            redraw(few, list("abcdefg") + ["d"] * 3, 0, 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
