import random

import pytest

from sdporec.data.codec import UnknownTitle, build_item_codec, load_codec
from sdporec.data.prompts import DOMAINS, TEMPLATES, build_prompt, pick_template


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


def test_item_codec_one_token_per_title_even_when_a_title_is_a_template_word(tmp_path):
    codec = build_item_codec(["Answer", "Air", "Air Supply", "Options"])
    prompt = build_prompt(["Air Supply", "Answer"], ["Air", "Options"], "music", 0)
    ids = codec.encode_prompt(prompt)
    titles = {codec.title_id(t) for t in ("Answer", "Air", "Air Supply", "Options")}
    assert sum(i in titles for i in ids) == 4
    assert codec.vocab["<|w:Answer|>"] in ids and codec.title_id("Answer") != codec.vocab["<|w:Answer|>"]
    assert codec.encode_answer("Air Supply") == [codec.title_id("Air Supply"), codec.eos_id]
    assert codec.decode(codec.encode_answer("Air Supply")) == "Air Supply"
    with pytest.raises(UnknownTitle, match="no token"):
        codec.encode_answer("Muse")
    codec.save(tmp_path)
    again = load_codec(str(tmp_path))
    assert again.kind == "items" and again.encode_prompt(prompt) == ids


def test_reserved_names_clash():
    with pytest.raises(ValueError, match="reserved"):
        build_item_codec(["<s>", "Fine"])
