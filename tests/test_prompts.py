"""Prompt building by hand: the pieces, the history's positions, template words and the seeded draw."""

import random

import pytest

from sdporec.data.prompts import (
    DOMAINS,
    LIST_SEP,
    TEMPLATES,
    build_prompt,
    pick_template,
    split_words,
    template_words,
    training_prompt,
)
from sdporec.data.samples import Sample


def test_a_prompt_by_hand():
    p = build_prompt(["A", "B"], ["C", "D", "E"], "movies", 3)
    assert p.pieces == (
        ("text", "Recent movies of a user: "),
        ("title", "A"),
        ("sep", ", "),
        ("title", "B"),
        ("text", ". Options: "),
        ("title", "C"),
        ("sep", ", "),
        ("title", "D"),
        ("sep", ", "),
        ("title", "E"),
        ("text", ". Reply with the title of the one option this user will watch next."),
    )
    assert p.history == (1, 3)
    assert p.text == (
        "Recent movies of a user: A, B. Options: C, D, E. Reply with the title of the one option this "
        "user will watch next."
    )


def test_template_zero_is_the_default_and_music_the_default_domain():
    assert build_prompt(["A"], ["B"]) == build_prompt(["A"], ["B"], "music", 0)
    assert build_prompt(["A"], ["B"]).text.startswith("Listening history, oldest first: A. Candidate artists: B.")


def test_one_title_has_no_separator_and_an_empty_list_leaves_the_text():
    p = build_prompt(["A"], [], "books", 0)
    assert [k for k, _ in p.pieces] == ["text", "title", "text", "text"] and p.history == (1,)
    assert p.text == (
        "Books read, oldest first: A. Candidate books: . Which one of the candidate books will this "
        "reader pick up next? Answer with its title."
    )


def test_a_title_that_looks_like_a_placeholder_stays_a_title():
    p = build_prompt(["{candidates}"], ["{history}"], "music", 1)
    assert [t for k, t in p.pieces if k == "title"] == ["{candidates}", "{history}"] and p.history == (1,)


def test_history_positions_point_at_the_history_in_every_template():
    history, candidates = ["H1", "H2", "H3"], ["C1", "C2"]
    for domain in DOMAINS:
        for i in range(len(TEMPLATES[domain])):
            p = build_prompt(history, candidates, domain, i)
            assert [p.pieces[j] for j in p.history] == [("title", h) for h in history]
            assert sum(k == "sep" for k, _ in p.pieces) == 3 and all(t == LIST_SEP for k, t in p.pieces if k == "sep")
            assert all(t for _, t in p.pieces)  # no empty text piece


def test_unknown_domain_message():
    with pytest.raises(ValueError) as e:
        build_prompt(["a"], ["b"], "podcasts")
    assert str(e.value) == "unknown domain 'podcasts'; choose one of music, movies, books"


def test_split_words_by_hand():
    assert split_words("Hello, world's 3rd  item?") == ["Hello", ",", "world", "'", "s", "3rd", "item", "?"]
    assert split_words("") == [] and split_words("   ") == []


def test_template_words_are_every_word_of_every_template_once():
    words = template_words()
    assert words == sorted(set(words))
    assert {",", ".", ":", "?", "Listening", "Candidate", "artists", "Reply", "films", "reader"} <= set(words)
    assert not any("{" in w or "}" in w for w in words)
    every = set()
    for fmts in TEMPLATES.values():
        for fmt in fmts:
            text = fmt.replace("{history}", "\n").replace("{candidates}", "\n")
            every.update(w for line in text.split("\n") for w in split_words(line))
    assert set(words) == every  # nothing from the placeholders, nothing glued across them


def test_pick_template_covers_every_template_and_nothing_else():
    drawn = {pick_template(d, random.Random(i)) for d in DOMAINS for i in range(200)}
    assert drawn == set(range(4))
    assert pick_template("music", random.Random(7)) == random.Random(7).randrange(4)


def test_training_prompt_draws_its_template_per_sample_and_epoch():
    s = Sample(["A", "B"], ["C", "D"], "C", key="train:5")
    built = [build_prompt(s.history, s.candidates, "music", i) for i in range(4)]
    templates = [built.index(training_prompt(s, "music", 0, epoch)) for epoch in range(8)]
    # The documented seed string: seed, "template", the sample's key, the epoch.
    assert templates == [random.Random(f"0:template:train:5:{e}").randrange(4) for e in range(8)]
    assert len(set(templates)) > 1
    other = [random.Random(f"1:template:train:5:{e}").randrange(4) for e in range(8)]
    assert other != templates  # another seed, other draws


def test_every_template_has_both_placeholders_and_builds():
    for domain in DOMAINS:
        assert len(TEMPLATES[domain]) >= 3
        for i, fmt in enumerate(TEMPLATES[domain]):
            assert fmt.count("{history}") == 1 and fmt.count("{candidates}") == 1
            p = build_prompt(["H1", "H2"], ["C1", "C2", "C3"], domain, i)
            assert [t for k, t in p.pieces if k == "title"] == ["H1", "H2", "C1", "C2", "C3"]
            assert "H1, H2" in p.text and "C1, C2, C3" in p.text and "{" not in p.text


def test_template_draw_is_seeded():
    a = [pick_template("music", random.Random(f"s:{i}")) for i in range(50)]
    assert a == [pick_template("music", random.Random(f"s:{i}")) for i in range(50)]
    assert len(set(a)) == len(TEMPLATES["music"])


def test_unknown_domain():
    with pytest.raises(ValueError, match="unknown domain"):
        build_prompt(["a"], ["b"], "podcasts")
