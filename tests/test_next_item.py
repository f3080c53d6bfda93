"""The next-item task and the whole catalogue for language models: prompts with the history alone, scores over the
catalogue equal to the same items scored one at a time (item tokens, text titles, the history readout), constrained
decoding over the catalogue, and the built-in backbone end to end through the CLI."""

import json
import random

import pytest
import torch

from sdporec.cli import main
from sdporec.data.batching import IGNORE
from sdporec.data.prompts import NEXT_ITEM_TEMPLATES, TEMPLATES, build_prompt, split_words, template_words
from sdporec.data.samples import Sample, read_samples
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.evaluate import evaluate_generation
from sdporec.evaluation.lm_catalogue import LMCatalogue
from sdporec.evaluation.scoring import LMScorer
from sdporec.runs import PREDICTIONS, read_evaluation_metrics


def test_next_item_templates_use_only_the_list_templates_words():
    """So the built-in backbone's vocabulary, and every token id in it, is what it was before the task existed."""
    words = {
        w
        for fmts in TEMPLATES.values()
        for f in fmts
        for w in split_words(f.replace("{history}", " ").replace("{candidates}", " "))
    }
    assert set(template_words()) == words | {","}
    assert all("{candidates}" not in f and "{history}" in f for fmts in NEXT_ITEM_TEMPLATES.values() for f in fmts)
    assert [len(f) for f in NEXT_ITEM_TEMPLATES.values()] == [len(f) for f in TEMPLATES.values()]


def test_a_next_item_prompt_shows_the_history_and_no_candidate():
    prompt = build_prompt(["A", "B"], ["C", "D"], "movies", 0, task="next-item")
    assert [t for kind, t in prompt.pieces if kind == "title"] == ["A", "B"]
    assert prompt.text == (
        "Movies watched, oldest first: A, B. Which movie will this viewer watch next? Answer with its title."
    )
    assert prompt.history == (1, 3)
    with pytest.raises(ValueError, match="unknown task"):
        build_prompt(["A"], ["C"], "movies", 0, task="next")


def _samples(titles, n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        picked = rng.sample(titles, 2 + rng.randint(1, 5))
        out.append(Sample(picked[:-1], rng.sample(titles, 4), picked[-1], key=f"s{i}"))
    return out


@pytest.mark.parametrize("task", ["candidates", "next-item"])
@pytest.mark.parametrize("readout", [0.0, 0.5, 1.0])
def test_item_token_catalogue_scores_equal_the_items_scored_one_at_a_time(tiny_llama, task, readout):
    """One forward pass per batch of prompts against every item as its own one-token answer (the EOS left out)."""
    model, codec = tiny_llama
    titles = codec.item_titles()
    samples = _samples(titles, 5, 0)
    scorer = LMScorer(model, codec, "music", 2, progress=False, history_readout=readout, task=task)
    full = LMCatalogue(scorer)(samples, Catalogue(titles))
    one = [[[codec.title_id(t)] for t in titles] for _ in samples]
    prompt = torch.tensor(scorer.answer_scores([scorer.prompt(s) for s in samples], one))
    history = torch.tensor(scorer.answer_scores([codec.encode_history(s.history, IGNORE)[0] for s in samples], one))
    assert full.shape == (5, len(titles))
    assert torch.allclose(full, (1 - readout) * prompt + readout * history, atol=1e-5)
    # "answer": the whole answer (item, then EOS) after the prompt, as a list scores it; the history readout as before.
    answers = [[codec.encode_answer(t) for t in titles] for _ in samples]
    whole = torch.tensor(scorer.answer_scores([scorer.prompt(s) for s in samples], answers))
    got = LMCatalogue(scorer, 3, score="answer")(samples, Catalogue(titles))
    assert torch.allclose(got, (1 - readout) * whole + readout * history, atol=1e-5)
    assert readout == 1 or not torch.allclose(whole, prompt, atol=1e-3)  # the EOS counts


@pytest.mark.parametrize("chunk", [7, 64])
@pytest.mark.parametrize("readout", [0.0, 1.0])
def test_text_catalogue_scores_equal_the_titles_scored_one_at_a_time(tiny_text_model, chunk, readout):
    """The prompt run once and the titles in chunks on its cache, cut back after each: every title's whole answer
    (tokens, then EOS) as the ranking protocol scores it; the last chunk shorter than the others."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.data.codec import TextCodec

    d, splits = tiny_text_model
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).float().eval()
    codec = TextCodec(AutoTokenizer.from_pretrained(str(d / "model")))
    items = Catalogue.of_samples(splits["train"][:16])
    samples = _samples(items.titles, 3, 1)
    scorer = LMScorer(model, codec, "music", 2, progress=False, history_readout=readout, task="next-item")
    full = LMCatalogue(scorer, chunk)(samples, items)
    if readout == 0:
        prompts = [scorer.prompt(s) for s in samples]
        answers = [[codec.encode_answer(t) for t in items.titles] for _ in samples]
    else:
        prompts = [codec.encode_history(s.history, IGNORE)[0] for s in samples]
        answers = [[codec.encode_next_title(t) for t in items.titles] for _ in samples]
    assert len(items) % chunk and full.shape == (3, len(items))
    assert torch.allclose(full, torch.tensor(scorer.answer_scores(prompts, answers)), atol=1e-5)
    # One scorer asked batch after batch, then of another catalogue: nothing of the first catalogue is kept.
    again, fewer = LMCatalogue(scorer, chunk), Catalogue(items.titles[::-1][:9])
    assert torch.allclose(torch.cat([again(samples[:1], items), again(samples[1:], items)]), full, atol=1e-5)
    reversed_part = full[:, [items.index[t] for t in fewer.titles]]
    assert torch.allclose(again(samples, fewer), reversed_part, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_generation_over_the_catalogue_names_a_catalogue_title_never_in_the_history(tiny_text_model, seed):
    """A property over random samples and catalogues, on a random text model that alone names no title."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.data.codec import TextCodec

    d, splits = tiny_text_model
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).float().eval()
    codec = TextCodec(AutoTokenizer.from_pretrained(str(d / "model")))
    pool = sorted({t for s in splits["train"] for t in s.history})
    items = Catalogue(random.Random(seed).sample(pool, 25))
    samples = _samples(items.titles, 6, seed)
    samples[0].history.append(samples[0].target)  # a user who came back to the target: it stays allowed
    metrics, rows = evaluate_generation(
        model, codec, samples, "music", 3, progress=False, constrained=True, beams=4, task="next-item", catalogue=items
    )
    assert metrics["valid_ratio"] == 1.0
    for s, row in zip(samples, rows):
        barred = set(s.history) - {s.target}
        assert len(set(row["beams"])) == 4
        assert all(t in items.index and t not in barred for t in row["beams"]) and row["answer"] == row["beams"][0]


FAST = ["--hidden", "32", "--layers", "1", "--heads", "2", "--batch-size", "16", "--no-progress"]


def test_next_item_on_the_builtin_backbone_from_sft_to_recommend(tmp_path, capsys):
    """SFT and S-DPO on the next-item task (recorded with the checkpoint), evaluated over the whole catalogue and on
    the lists, constrained decoding with beams, and `recommend` without candidates."""
    assert main(["prepare", "--out", str(tmp_path / "d"), "--users", "60", "--items", "40", "--genres", "4"]) == 0
    data = ["--train", str(tmp_path / "d" / "train.jsonl"), "--valid", str(tmp_path / "d" / "valid.jsonl")]
    sft = ["sft", "--task", "next-item", "--epochs", "1", "--history-weight", "1", *data, *FAST]
    assert main([*sft, "--out", str(tmp_path / "sft")]) == 0
    assert json.loads((tmp_path / "sft" / "model" / "sdporec_checkpoint.json").read_text())["config"]["task"] == (
        "next-item"
    )
    sdpo = ["sdpo", "--model", str(tmp_path / "sft" / "model"), "--negatives-from", "popular", "--epochs", "1"]
    assert main([*sdpo, *data, "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "sdpo")]) == 0
    model = str(tmp_path / "sdpo" / "model")
    test = str(tmp_path / "d" / "test.jsonl")
    evaluate = ["evaluate", "--model", model, "--data", test, "--no-progress", "--history-readout", "0"]
    assert main([*evaluate, "--candidates", "all", "--out", str(tmp_path / "all")]) == 0
    metrics = read_evaluation_metrics(tmp_path / "all")
    assert metrics["task"] == "next-item" and metrics["catalogue"] == 40 and 0 <= metrics["hr@20"] <= 1
    rows = [json.loads(line) for line in open(tmp_path / "all" / PREDICTIONS)]
    assert all(r["catalogue"] == 40 - len(set(r_hist) - {r["target"]}) for r, r_hist in zip(rows, _histories(test)))
    # An export keeps the task, domain and readout its training recorded: it ranks the catalogue alike.
    assert main(["export", "--model", model, "--out", str(tmp_path / "exported")]) == 0
    again = ["evaluate", "--model", str(tmp_path / "exported"), "--data", test, "--no-progress", "--candidates", "all"]
    assert main([*again, "--out", str(tmp_path / "all-exported")]) == 0
    assert read_evaluation_metrics(tmp_path / "all-exported")["task"] == "next-item"
    exported = [json.loads(line) for line in open(tmp_path / "all-exported" / PREDICTIONS)]
    recorded = json.loads((tmp_path / "sdpo" / "model" / "sdporec_checkpoint.json").read_text())["history_readout"]
    assert read_evaluation_metrics(tmp_path / "all-exported")["history_readout"] == recorded
    if recorded == 0:
        assert [r["ranked"] for r in exported] == [r["ranked"] for r in rows]
    assert main([*evaluate, "--out", str(tmp_path / "list")]) == 0
    assert read_evaluation_metrics(tmp_path / "list")["n"] == len(rows)
    generation = ["--protocol", "generation", "--constrained", "--beams", "5", "--candidates", "all"]
    assert main([*evaluate[:-2], *generation, "--out", str(tmp_path / "gen")]) == 0
    assert read_evaluation_metrics(tmp_path / "gen")["valid_ratio"] == 1.0

    history = _histories(test)[0]
    (tmp_path / "exclude.txt").write_text("\n".join(rows[0]["ranked"][i][0] for i in (0, 2)) + "\n")
    capsys.readouterr()
    recommend = ["recommend", "--model", model, "--history", *history, "--history-readout", "0", "--json"]
    assert main([*recommend, "--top", "5"]) == 0
    best = [r["title"] for r in json.loads(capsys.readouterr().out)]
    assert best == [t for t, _ in rows[0]["ranked"][:5]]  # evaluate's top for the same history
    assert main([*recommend, "--top", "5", "--exclude", str(tmp_path / "exclude.txt")]) == 0
    kept = [r["title"] for r in json.loads(capsys.readouterr().out)]
    assert kept == [t for t, _ in rows[0]["ranked"] if t not in {best[0], best[2]}][:5]


def _histories(path) -> list[list[str]]:
    return [json.loads(line)["historyList"] for line in open(path)]


def test_catalogue_settings_are_one_line_errors(tmp_path, capsys, tiny_text_model):
    """A list-task checkpoint asked for the whole catalogue, a text model with no catalogue, a history title
    outside the catalogue file, and more beams than titles: each names its setting or file, row and title."""
    assert main(["prepare", "--out", str(tmp_path / "d"), "--users", "60", "--items", "40", "--genres", "4"]) == 0
    data = ["--train", str(tmp_path / "d" / "train.jsonl"), "--valid", str(tmp_path / "d" / "valid.jsonl")]
    assert main(["sft", "--epochs", "1", *data, *FAST, "--out", str(tmp_path / "sft")]) == 0
    test = str(tmp_path / "d" / "test.jsonl")
    evaluate = ["evaluate", "--model", str(tmp_path / "sft" / "model"), "--data", test, "--no-progress"]
    capsys.readouterr()
    assert main([*evaluate, "--candidates", "all", "--out", str(tmp_path / "e1")]) == 2
    assert "setting 'candidates'" in capsys.readouterr().err
    assert main([*evaluate, "--candidates", "all", "--task", "next-item", "--out", str(tmp_path / "e2")]) == 0
    assert main([*evaluate, "--catalogue-score", "answer", "--out", str(tmp_path / "e6")]) == 2
    assert "setting 'catalogue_score'" in capsys.readouterr().err and not (tmp_path / "e6").exists()
    (tmp_path / "few.txt").write_text("Nothing\n")
    assert main([*evaluate, "--candidates", "all", "--catalogue", str(tmp_path / "few.txt"), "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl" in err and "historyList" in err and "not in the catalogue" in err
    first = json.loads(open(test).readline())
    titles = {*first["historyList"], first["trueSelection"], "A title it lacks"}
    (tmp_path / "other.txt").write_text("".join(f"{t}\n" for t in sorted(titles)))
    unknown = ["--candidates", "all", "--task", "next-item", "--limit", "1", "--catalogue", str(tmp_path / "other.txt")]
    assert main([*evaluate, *unknown, "--out", str(tmp_path / "e5")]) == 2
    err = capsys.readouterr().err
    assert "other.txt" in err and "'A title it lacks' has no item token" in err and "internal" not in err
    gen = ["--protocol", "generation", "--constrained", "--task", "next-item", "--candidates", "all"]
    assert main([*evaluate, *gen, "--beams", "41", "--out", str(tmp_path / "e3")]) == 2
    assert "setting 'beams'" in capsys.readouterr().err
    assert not (tmp_path / "e3").exists() and not (tmp_path / "x").exists()
    d, _ = tiny_text_model
    text = ["evaluate", "--model", str(d / "model"), "--data", str(d / "valid.jsonl"), "--task", "next-item"]
    assert main([*text, "--candidates", "all", "--no-progress", "--out", str(tmp_path / "e4")]) == 2
    assert "setting 'catalogue'" in capsys.readouterr().err


@pytest.mark.parametrize("item_tokens", [False, True], ids=["titles", "item-tokens"])
def test_next_item_on_a_pretrained_text_model_from_sft_to_recommend(tiny_text_model, tmp_path, capsys, item_tokens):
    """A tiny random Llama reading titles as text (the catalogue from a file) or with item tokens (its own):
    next-item SFT, S-DPO, the whole catalogue ranked, constrained decoding with beams, `recommend` without
    candidates agreeing with evaluate's top."""
    d, splits = tiny_text_model
    data = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    fast = ["--epochs", "1", "--batch-size", "8", "--eval-samples", "4", "--no-progress"]
    tokens = ["--item-tokens"] if item_tokens else []
    assert (
        main(
            [
                "sft",
                "--model",
                str(d / "model"),
                "--task",
                "next-item",
                *tokens,
                *data,
                *fast,
                "--out",
                str(tmp_path / "sft"),
            ]
        )
        == 0
    )
    sdpo = ["sdpo", "--model", str(tmp_path / "sft" / "model"), *data, *fast, "--out", str(tmp_path / "sdpo")]
    assert main(sdpo) == 0
    files = read_samples(d / "train.jsonl") + read_samples(d / "valid.jsonl")
    titles = sorted({t for s in files for t in (*s.history, *s.candidates)})
    (tmp_path / "items.txt").write_text("\n".join(titles) + "\n")
    catalogue = [] if item_tokens else ["--catalogue", str(tmp_path / "items.txt")]
    model = str(tmp_path / "sdpo" / "model")
    evaluate = ["evaluate", "--model", model, "--data", str(d / "valid.jsonl"), "--no-progress", *catalogue]
    assert main([*evaluate, "--candidates", "all", "--out", str(tmp_path / "all")]) == 0
    metrics = read_evaluation_metrics(tmp_path / "all")
    assert metrics["catalogue"] == len(titles) and metrics["n"] == 4 and metrics["task"] == "next-item"
    gen = ["--protocol", "generation", "--constrained", "--beams", "3", "--candidates", "all"]
    assert main([*evaluate, *gen, "--out", str(tmp_path / "gen")]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "gen" / PREDICTIONS)]
    assert all(len(r["beams"]) == 3 and set(r["beams"]) <= set(titles) for r in rows)
    first = json.loads(open(tmp_path / "all" / PREDICTIONS).readline())
    history = files[16].history  # the first validation sample's
    capsys.readouterr()
    assert main(["recommend", "--model", model, "--history", *history, *catalogue, "--top", "3", "--json"]) == 0
    best = [r["title"] for r in json.loads(capsys.readouterr().out)]
    expected = [t for t, _ in first["ranked"] if t not in history or t == first["target"]]
    assert best == [t for t in expected if t not in history][:3]


def test_recommend_without_candidates_needs_a_next_item_question_and_a_catalogue(tmp_path, capsys, tiny_text_model):
    """A list-task checkpoint without candidates, a text model without a catalogue, a history title the catalogue
    lacks: one-line errors naming the setting or field; with --task next-item the list-task checkpoint answers."""
    from sdporec import Recommender
    from sdporec.errors import ConfigError, DataError

    assert main(["prepare", "--out", str(tmp_path / "d"), "--users", "60", "--items", "40", "--genres", "4"]) == 0
    data = ["--train", str(tmp_path / "d" / "train.jsonl"), "--valid", str(tmp_path / "d" / "valid.jsonl")]
    assert main(["sft", "--epochs", "1", *data, *FAST, "--out", str(tmp_path / "sft")]) == 0
    model = str(tmp_path / "sft" / "model")
    history = _histories(tmp_path / "d" / "test.jsonl")[0]
    capsys.readouterr()
    assert main(["recommend", "--model", model, "--history", *history]) == 2
    assert "setting 'candidates'" in capsys.readouterr().err
    assert main(["recommend", "--model", model, "--history", *history, "--task", "next-item", "--top", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    rec = Recommender.load(model, task="next-item")
    best = rec.recommend(history, top=3, exclude=[rec.recommend(history, top=1)[0][0]])
    assert len(best) == 3 and not {t for t, _ in best} & set(history)
    with pytest.raises(DataError, match="historyList"):
        rec.recommend(["Nothing at all"], top=3)
    with pytest.raises(ConfigError, match="setting 'exclude'"):
        rec.recommend(history, top=3, exclude=history[0])
    (tmp_path / "empty.json").write_text(json.dumps({"historyList": history, "itemList": []}))
    assert main(["recommend", "--model", model, "--input", str(tmp_path / "empty.json")]) == 2
    assert "itemList" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text(history[0] + "\n")
    listed = ["recommend", "--model", model, "--history", *history, "--candidates", history[0], history[1]]
    assert main([*listed, "--exclude", str(tmp_path / "x.txt")]) == 2
    assert "setting 'exclude'" in capsys.readouterr().err
    d, _ = tiny_text_model
    text = Recommender.load(str(d / "model"), task="next-item")
    with pytest.raises(ConfigError, match="setting 'catalogue'"):
        text.recommend(["A"], top=3)


def test_pipeline_on_the_next_item_task(tmp_path):
    run = ["pipeline", "--task", "next-item", "--users", "60", "--items", "40", "--sft-epochs", "1", *FAST[:-3]]
    assert main([*run, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    for stage in ("sft", "dpo", "sdpo"):
        assert "task: next-item" in (tmp_path / "run" / stage / "config.yaml").read_text()
        assert read_evaluation_metrics(tmp_path / "run" / "eval" / stage)["n"] > 0


def test_a_model_whose_cache_cannot_be_cut_scores_the_catalogue_alike(tiny_text_model, monkeypatch):
    """No reusable cache (none returned, sliding-window layers): each chunk with its own run of the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.data.codec import TextCodec
    from sdporec.evaluation import lm_catalogue

    d, splits = tiny_text_model
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).float().eval()
    codec = TextCodec(AutoTokenizer.from_pretrained(str(d / "model")))
    items = Catalogue.of_samples(splits["train"][:8])
    samples = _samples(items.titles, 2, 3)
    scorer = LMScorer(model, codec, "music", 2, progress=False, task="next-item", score="mean")
    cached = LMCatalogue(scorer, 9)(samples, items)
    monkeypatch.setattr(lm_catalogue, "cache_kwarg", lambda out: ("past_key_values", None))
    assert torch.allclose(LMCatalogue(scorer, 9)(samples, items), cached, atol=1e-5)


def test_beam_hits_survive_gathering_and_catalogue_decoding_pairs_only_with_catalogue_runs(tmp_path):
    from sdporec.errors import ConfigError
    from sdporec.evaluation.compare import compare_predictions
    from sdporec.evaluation.evaluate import metrics_from_rows, write_results

    rows = [
        {
            "key": f"k{i}",
            "sample": f"s{i}",
            "target": "a",
            "answer": b[0],
            "valid": True,
            "hit": b[0] == "a",
            "beams": b,
        }
        for i, b in enumerate([["a", "b", "c", "d", "e"], ["b", "c", "d", "e", "a"], ["b", "c", "d", "e", "f"]])
    ]
    gathered = metrics_from_rows(rows)  # as `evaluate_sharded` makes them from every process's rows
    assert (gathered["hr@1"], gathered["hr@5"], gathered["valid_ratio"]) == (1 / 3, 2 / 3, 1.0)
    assert "hr@10" not in gathered
    write_results(tmp_path / "list", metrics_from_rows(rows), rows)
    write_results(tmp_path / "all", metrics_from_rows(rows), [r | {"catalogue": 40} for r in rows])
    with pytest.raises(ConfigError, match="ranks the whole catalogue"):
        compare_predictions([str(tmp_path / "all"), str(tmp_path / "list")])
