"""Item tokens inside a pretrained model (`sft --item-tokens`, the hybrid codec), on a tiny random Llama with a
BPE tokenizer: the codec's prompts and answers, the new rows' initialisation, single-token scoring against the
packed and paper layouts, every stage through the CLI, and the errors. The real model: tests/test_real_model.py."""

import json

import pytest
import torch
from conftest import write_small_splits

from sdporec.cli import main
from sdporec.data.batching import collate, same_answer_count
from sdporec.data.codec import ReservedTitle, UnknownTitle, load_codec
from sdporec.data.hybrid import HybridCodec, add_item_tokens, item_token
from sdporec.data.prompts import build_prompt
from sdporec.models.families import build_family, family_config, tokenizer_texts
from sdporec.models.item_rows import add_item_rows, title_pieces
from sdporec.models.logprobs import IGNORE, answer_logprobs_full, answer_logprobs_packed
from sdporec.models.scoring import answer_logprobs_short, scoring_layout


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    splits = write_small_splits(d, users=30, items=60, seed=0, n_train=16, n_valid=4)
    model, tokenizer = build_family("llama", tokenizer_texts(splits["train"]), 32, 1, 2, seed=0, vocab_size=400)
    model.save_pretrained(str(d / "model"))
    tokenizer.save_pretrained(str(d / "model"))
    return d, splits


def hybrid(d, titles, item_text="title"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(d / "model"))
    items = add_item_tokens(tokenizer, titles)
    return HybridCodec(tokenizer, False, items, item_text)


def test_prompt_shows_each_title_then_its_token_and_the_answer_is_the_token_then_eos(text_model):
    d, splits = text_model
    s = splits["valid"][0]
    codec = hybrid(d, [*s.history, *s.candidates, "Spare"])
    assert codec.titles == sorted({*s.history, *s.candidates, "Spare"})
    base = len(codec.tokenizer) - len(codec.titles)
    assert codec.token_ids == list(range(base, base + len(codec.titles)))          # consecutive, after the vocabulary
    prompt = build_prompt(s.history, s.candidates, "music")
    ids = codec.encode_prompt(prompt)
    items = [i for i in ids if i >= base]
    assert items == [codec.title_id(t) for t in [*s.history, *s.candidates]]      # one token per listed title, in order
    text = codec.prompt_text(prompt)
    assert f"{s.history[0]} {item_token(codec.titles.index(s.history[0]))}, " in text
    # The space before a token is the token's (lstrip): a title then its token costs one token more than the title.
    plain = codec.tokenizer(prompt.text)["input_ids"]
    assert len(ids) == len(plain) + len(s.history) + len(s.candidates)
    short = hybrid(d, [*s.history, *s.candidates, "Spare"], "token")
    only = short.encode_prompt(prompt)
    assert len(only) < len(ids) and [i for i in only if i >= base] == items
    assert s.target not in short.tokenizer.decode(only)
    assert codec.encode_answer(s.target) == [codec.title_id(s.target), codec.eos_id]
    assert codec.encode_next_title(s.target) == [codec.title_id(s.target)]
    hist, labels = codec.encode_history(s.history, IGNORE)
    assert hist == [codec.tokenizer.bos_token_id] + [codec.title_id(t) for t in s.history]
    assert labels == [IGNORE, IGNORE] + hist[2:]


def test_prompt_history_labels_are_the_history_item_tokens_after_the_first(text_model):
    d, splits = text_model
    s = splits["valid"][1]
    codec = hybrid(d, [*s.history, *s.candidates])
    prompt = build_prompt(s.history, s.candidates, "music", 2)
    ids, labels = codec.encode_prompt_history(prompt, IGNORE)
    assert ids == codec.encode_prompt(prompt)
    assert [x for x in labels if x != IGNORE] == [codec.title_id(t) for t in s.history[1:]]
    assert all(x == IGNORE or x == i for x, i in zip(labels, ids))


def test_generation_reads_the_first_item_token_and_unknown_or_reserved_titles_are_errors(text_model):
    d, _ = text_model
    codec = hybrid(d, ["Air", "Air Supply", "Muse"])
    air, supply = codec.title_id("Air"), codec.title_id("Air Supply")
    words = codec.tokenizer("hello", add_special_tokens=False)["input_ids"]
    assert codec.generated_title([*words, supply, air, codec.eos_id]) == "Air Supply"   # the first one decides
    assert codec.generated_title([*words, codec.eos_id, air]) is None                 # nothing after EOS counts
    assert codec.decode([supply, codec.eos_id]) == "Air Supply"
    assert codec.knows("Muse") and not codec.knows("Blur")
    with pytest.raises(UnknownTitle, match="Blur"):
        codec.encode_answer("Blur")
    with pytest.raises(UnknownTitle, match="Blur"):
        codec.encode_prompt(build_prompt(["Muse"], ["Blur"], "music"))
    with pytest.raises(ReservedTitle, match="<\\|item:"):
        hybrid(d, ["Muse", "odd <|item:3|> title"])
    with pytest.raises(ReservedTitle, match="already has item tokens"):
        add_item_tokens(codec.tokenizer, ["Muse"])


def test_a_saved_codec_loads_back_with_the_same_tokens(text_model, tmp_path):
    d, splits = text_model
    s = splits["valid"][0]
    codec = hybrid(d, [*s.history, *s.candidates], "token")
    codec.save(tmp_path)
    record = json.loads((tmp_path / "sdporec_codec.json").read_text())
    assert record == {"kind": "hybrid", "chat": False, "item_text": "token", "items": codec.titles}
    again = load_codec(str(tmp_path))
    assert isinstance(again, HybridCodec) and again.item_ids == codec.item_ids and again.item_text == "token"
    prompt = build_prompt(s.history, s.candidates, "music")
    assert again.encode_prompt(prompt) == codec.encode_prompt(prompt)


def test_new_rows_start_from_the_title_mean_or_its_hidden_state_and_an_untied_head_gets_its_own(text_model):
    from transformers import AutoModelForCausalLM

    d, splits = text_model
    titles = ["Air Supply", "Muse", "The Nouthdos Mirrors"]
    codec = hybrid(d, titles)
    model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
    old = model.get_input_embeddings().weight.detach().clone()
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    new = model.get_input_embeddings().weight
    assert new.shape[0] == len(codec.tokenizer) and torch.equal(new[:old.shape[0]], old)
    means = torch.stack([old[p].mean(0) for p in title_pieces(codec.tokenizer, codec.titles)])
    centred = means - means.mean(0)                   # what every title shares taken out, then the usual norm
    expected = centred / centred.norm(dim=-1, keepdim=True) * old.norm(dim=-1).mean()
    assert torch.allclose(new[torch.tensor(codec.token_ids)], expected, atol=1e-5)
    assert model.get_output_embeddings().weight is new                                # still tied

    cfg = family_config("llama", 400, 32, 1, 2, special_ids={"pad": 0, "bos": 1, "eos": 2})
    cfg.tie_word_embeddings = False
    untied = AutoModelForCausalLM.from_config(cfg)
    emb, head = (untied.get_input_embeddings().weight.detach().clone(),
                 untied.get_output_embeddings().weight.detach().clone())
    codec = hybrid(d, titles)
    add_item_rows(untied, codec.tokenizer, codec.titles, codec.token_ids, "hidden")
    rows = torch.tensor(codec.token_ids)
    for w in (untied.get_input_embeddings().weight, untied.get_output_embeddings().weight):
        unit = torch.nn.functional.normalize(w[rows].detach(), dim=-1)
        assert (unit @ unit.T)[~torch.eye(3, dtype=torch.bool)].mean() < 0     # centred: three rows spread apart
    for w, known in ((untied.get_input_embeddings().weight, emb), (untied.get_output_embeddings().weight, head)):
        norms = w[rows].detach().norm(dim=-1)
        assert torch.allclose(norms, known.norm(dim=-1).mean().expand(len(rows)), rtol=1e-4)
    assert not torch.allclose(untied.get_input_embeddings().weight[rows], untied.get_output_embeddings().weight[rows])


def short_batch(codec, samples, n_answers):
    prompts = [codec.encode_prompt(build_prompt(s.history, s.candidates, "music")) for s in samples]
    answers = [[codec.encode_answer(c) for c in s.candidates[:n]] for s, n in zip(samples, n_answers)]
    return collate(prompts, same_answer_count(answers, codec.pad_id), codec.pad_id)


def test_single_token_scoring_equals_the_packed_and_paper_layouts_values_and_gradients(text_model):
    from transformers import AutoModelForCausalLM

    d, splits = text_model
    samples = splits["valid"][:3]
    codec = hybrid(d, [t for s in samples for t in (*s.history, *s.candidates)])
    model = AutoModelForCausalLM.from_pretrained(str(d / "model"))
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    batch = short_batch(codec, samples, [20, 7, 12])     # fewer answers: padding answers of one token
    assert batch.answer_ids.shape[-1] == 2 and not bool(batch.answer_mask[1, 7:, 1].any())
    grads = {}
    for name, fn in (("short", answer_logprobs_short), ("packed", answer_logprobs_packed),
                     ("paper", answer_logprobs_full)):
        model.zero_grad()
        logps, counts = fn(model, batch)
        logps.sum().backward()
        grads[name] = (logps.detach(), counts, [p.grad.clone() for p in model.parameters()])
    for other in ("packed", "paper"):
        assert torch.allclose(grads["short"][0], grads[other][0], atol=1e-5)
        assert torch.equal(grads["short"][1], grads[other][1])
        for a, b in zip(grads["short"][2], grads[other][2]):
            assert torch.allclose(a, b, atol=1e-5)
    assert scoring_layout("packed", short_answers=True) is answer_logprobs_short
    assert scoring_layout("cache", short_answers=True) is not answer_logprobs_short


def test_the_history_readout_with_item_tokens_equals_the_plain_whole_row_reference(text_model):
    from conftest import history_readout_reference
    from transformers import AutoModelForCausalLM

    from sdporec.evaluation.evaluate import LMScorer

    d, splits = text_model
    samples = splits["valid"][:2]
    codec = hybrid(d, [t for s in samples for t in (*s.history, *s.candidates)])
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).eval()
    add_item_rows(model, codec.tokenizer, codec.titles, codec.token_ids, "mean")
    scores = LMScorer(model, codec, "music", progress=False).history_scores(samples)
    for s, row in zip(samples, scores):
        assert row == pytest.approx(history_readout_reference(model, codec, s), abs=1e-5)


CLI_FAST = ["--epochs", "1", "--batch-size", "8", "--eval-samples", "4", "--no-progress"]


def ranked(path):
    return {json.loads(line)["key"]: json.loads(line)["ranked"] for line in open(path)}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_every_stage_on_item_tokens_through_the_cli(text_model, tmp_path, capsys, lora):
    d, _ = text_model
    data = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    extra = ["--lora"] if lora else []
    assert main(["sft", "--model", str(d / "model"), "--item-tokens", "--out", str(tmp_path / "sft"),
                 *data, *CLI_FAST, *extra]) == 0
    sft = tmp_path / "sft" / "model"
    record = json.loads((sft / "sdporec_codec.json").read_text())
    assert record["kind"] == "hybrid" and len(record["items"]) == 60
    if lora:   # the adapter trains the item rows, and its base (with those rows) travels with it
        adapter = json.loads((sft / "adapter_config.json").read_text())
        assert len(adapter["trainable_token_indices"]) == 60 and (sft / "base" / "config.json").is_file()
    assert main(["sdpo", "--model", str(sft), "--out", str(tmp_path / "sdpo"), *data, *CLI_FAST]) == 0
    if not lora:   # a new adapter over the full SFT model trains the item rows too; its reference is the SFT model
        assert main(["sdpo", "--model", str(sft), "--lora", "--out", str(tmp_path / "sdpo-lora"), *data,
                     *CLI_FAST]) == 0
        adapter = json.loads((tmp_path / "sdpo-lora" / "model" / "adapter_config.json").read_text())
        assert len(adapter["trainable_token_indices"]) == 60
        assert main(["evaluate", "--model", str(tmp_path / "sdpo-lora" / "model"), "--data", str(d / "valid.jsonl"),
                     "--no-progress", "--out", str(tmp_path / "rank-lora")]) == 0
    model = str(tmp_path / "sdpo" / "model")
    assert json.loads((tmp_path / "sdpo" / "model" / "sdporec_codec.json").read_text()) == record
    evaluate = ["evaluate", "--model", model, "--data", str(d / "valid.jsonl"), "--no-progress"]
    assert main([*evaluate, "--out", str(tmp_path / "rank")]) == 0
    assert main([*evaluate, "--out", str(tmp_path / "rank-paper"), "--layout", "paper"]) == 0
    first = ranked(tmp_path / "rank" / "predictions.jsonl")
    paper = ranked(tmp_path / "rank-paper" / "predictions.jsonl")
    for key, rows in first.items():
        assert dict(paper[key]) == pytest.approx(dict(rows), abs=1e-4)
    assert main([*evaluate, "--protocol", "generation", "--out", str(tmp_path / "gen")]) == 0
    gen = [json.loads(line) for line in open(tmp_path / "gen" / "predictions.jsonl")]
    metrics = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    for r, line in zip(gen, open(d / "valid.jsonl")):
        candidates = json.loads(line)["itemList"]
        if r["answer"] is not None:    # the decoded answer is the title of a candidate's item token
            assert r["answer"] in candidates and r["generated"] == r["answer"]
        assert r["hit"] == (r["answer"] == r["target"])
    assert metrics["valid_ratio"] == pytest.approx(sum(r["valid"] for r in gen) / len(gen))
    assert metrics["hr@1"] == pytest.approx(sum(r["hit"] for r in gen) / len(gen))

    sample = json.loads(open(d / "valid.jsonl").readline())
    capsys.readouterr()
    assert main(["recommend", "--model", model, "--history", *sample["historyList"], "--candidates",
                 *sample["itemList"], "--json"]) == 0
    shown = {r["title"]: r["score"] for r in json.loads(capsys.readouterr().out)}
    assert shown == pytest.approx(dict(first["eval:0"]), abs=1e-4)

    export = ["export", "--model", model, "--out", str(tmp_path / "merged")] + (["--merge"] if lora else [])
    assert main(export) == 0
    assert json.loads((tmp_path / "merged" / "sdporec_codec.json").read_text()) == record
    assert main(["evaluate", "--model", str(tmp_path / "merged"), "--data", str(d / "valid.jsonl"), "--no-progress",
                 "--out", str(tmp_path / "rank-merged")]) == 0
    merged = ranked(tmp_path / "rank-merged" / "predictions.jsonl")
    for key, rows in first.items():
        assert dict(merged[key]) == pytest.approx(dict(rows), abs=1e-4)


def test_a_lora_checkpoint_loads_in_plain_transformers_and_peft(text_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.evaluation.evaluate import LMScorer
    from sdporec.models.loading import load_model
    from sdporec.models.lora import peft_quietly

    d, splits = text_model
    assert main(["sft", "--model", str(d / "model"), "--item-tokens", "--lora", "--out", str(tmp_path / "sft"),
                 "--train", str(d / "train.jsonl"), *CLI_FAST]) == 0
    path = tmp_path / "sft" / "model"
    ours, codec = load_model(str(path))
    with peft_quietly():
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(path / "base")), str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    s = splits["valid"][0]
    text = codec.prompt_text(build_prompt(s.history, s.candidates, "music")) + " " + item_token(0)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0, -1].item() == codec.token_ids[0]                # the saved tokenizer knows the item tokens
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)
    merged = ours.merge_and_unload()
    trained = merged.get_input_embeddings().weight
    base = AutoModelForCausalLM.from_pretrained(str(path / "base")).get_input_embeddings().weight
    rows = torch.tensor(codec.token_ids)
    assert not torch.allclose(trained[rows], base[rows])           # the item rows were trained
    keep = torch.ones(base.shape[0], dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(trained[keep], base[keep])                  # and nothing else of the embedding
    head = merged.get_output_embeddings().weight
    assert torch.equal(head[rows], trained[rows])                  # the tied head scores with the trained rows
    scores = LMScorer(*load_model(str(path)), "music", progress=False)(splits["valid"][:2])
    paper = LMScorer(*load_model(str(path)), "music", progress=False, layout="paper")(splits["valid"][:2])
    for a, b in zip(scores, paper):
        assert a == pytest.approx(b, abs=1e-5)


def test_item_token_settings_and_unknown_titles_are_one_line_errors_before_anything_is_written(text_model, tmp_path,
                                                                                              capsys):
    d, _ = text_model
    data = ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]
    gguf = tmp_path.parent / f"{tmp_path.name}-fake.gguf"    # a GGUF header is all the checks read
    gguf.write_bytes(b"GGUF")
    for argv, said in (
        (["sft", "--item-tokens", *data, "--out", str(tmp_path / "a")], "setting 'item_tokens'"),
        (["sft", "--model", str(d / "model"), "--item-init", "hidden", *data, "--out", str(tmp_path / "b")],
         "setting 'item_init': applies with --item-tokens only"),
        (["sft", "--model", str(d / "model"), "--item-text", "token", *data, "--out", str(tmp_path / "c")],
         "setting 'item_text'"),
        (["sft", "--model", str(gguf), "--item-tokens", "--lora", "--load-in-4bit", *data,
          "--out", str(tmp_path / "e")], "setting 'load_in_4bit'"),
        (["sft", "--model", str(d / "model"), "--item-tokens", "--history-weight", "1", "--history-in", "prompt",
          *data, "--out", str(tmp_path / "f")], "setting 'history_in': with --item-text title"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())

    assert main(["sft", "--model", str(d / "model"), "--item-tokens", "--out", str(tmp_path / "sft"),
                 "--train", str(d / "train.jsonl"), *CLI_FAST]) == 0      # valid.jsonl's titles not in the vocabulary
    model = str(tmp_path / "sft" / "model")
    (tmp_path / "new.jsonl").write_text(open(d / "valid.jsonl").readline().replace('"itemList": ["',
                                                                                  '"itemList": ["Unheard Of", "'))
    capsys.readouterr()
    new = str(tmp_path / "new.jsonl")
    for argv, where in (
        (["evaluate", "--model", model, "--data", new, "--out", str(tmp_path / "ev")], new),
        (["sdpo", "--model", model, "--train", new, "--out", str(tmp_path / "sdpo")], new),
        (["recommend", "--model", model, "--history", "Unheard Of", "--candidates", "Unheard Of"], "command line"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "'Unheard Of'" in err and "item tokens" in err and where in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "sdpo").exists()
    assert main(["sft", "--model", model, "--item-tokens", "--train", str(d / "train.jsonl"),
                 "--out", str(tmp_path / "again")]) == 2
    assert "has item tokens already" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_item_ids_sharing_a_title_share_one_token_and_audit_counts_them(text_model):
    from sdporec.data.audit import audit
    from sdporec.data.samples import Sample

    d, _ = text_model
    # `prepare` names the second id of a shared title 'Title [item N]' (importers.distinct_titles).
    codec = hybrid(d, ["Chasing Amy (1997)", "Chasing Amy (1997) [item 268]", "Muse", "Muse [item]"])
    assert codec.titles == ["Chasing Amy (1997)", "Muse", "Muse [item]"]            # only the importer's mark merges
    assert codec.title_id("Chasing Amy (1997) [item 268]") == codec.title_id("Chasing Amy (1997)")
    amy = codec.title_id("Chasing Amy (1997)")
    candidates = ["Muse", "Chasing Amy (1997) [item 268]"]
    assert codec.generated_candidate([amy, codec.eos_id], candidates) == "Chasing Amy (1997) [item 268]"
    assert codec.generated_candidate([codec.title_id("Muse [item]"), codec.eos_id], candidates) is None
    assert codec.generated_candidate([codec.eos_id, amy], candidates) is None
    sample = Sample(history=["Muse", "Chasing Amy (1997)"], candidates=["Chasing Amy (1997) [item 268]", "Muse [item]"],
                    target="Muse [item]", key="s0")
    assert audit([sample])["shared_titles"] == 1


def test_resume_of_an_item_token_lora_run_equals_the_uninterrupted_run(text_model, tmp_path):
    """The resumable checkpoint holds the adapter and the trained item rows: a run resumed from its step-3
    checkpoint (the step-4 one removed, as if killed after writing it; resuming drops the log lines after
    step 3) logs what the uninterrupted run logged."""
    import shutil

    d, _ = text_model
    args = ["sft", "--model", str(d / "model"), "--item-tokens", "--lora", "--lora-dropout", "0.1",
            "--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl"), "--epochs", "2", "--batch-size",
            "8", "--eval-every", "1", "--eval-samples", "4", "--save-every", "1", "--log-every", "1", "--no-progress"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*args, "--out", str(whole)]) == 0
    assert main([*args, "--out", str(cut)]) == 0
    assert sorted(p.name for p in (cut / "checkpoints").glob("step-*")) == ["step-00000003", "step-00000004"]
    shutil.rmtree(cut / "checkpoints" / "step-00000004")
    (cut / "summary.json").unlink()
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        rows = [[{k: v for k, v in json.loads(x).items() if k != "elapsed_s"}
                 for x in (run / log).read_text().splitlines()] for run in (whole, cut)]
        assert rows[0] == rows[1]
    for run in (whole, cut):
        assert main(["evaluate", "--model", str(run / "model"), "--data", str(d / "valid.jsonl"), "--no-progress",
                     "--out", str(run / "eval")]) == 0
    assert ranked(whole / "eval" / "predictions.jsonl") == ranked(cut / "eval" / "predictions.jsonl")


def test_pipeline_with_item_tokens_and_a_test_title_it_would_not_know(text_model, tmp_path, capsys):
    from sdporec.data.samples import write_samples

    d, splits = text_model
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text((d / f"{name}.jsonl").read_text())
    write_samples(data / "test.jsonl", splits["test"][:4])
    run = ["pipeline", "--model", str(d / "model"), "--lora", "--item-tokens", "--data", str(data), "--sft-epochs",
           "1", "--batch-size", "8", "--eval-samples", "4", "--pref-eval-every", "0", "--no-progress"]
    assert main([*run, "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"popularity", "sft", "dpo", "sdpo"} and all(m["n"] == 4 for m in metrics.values())
    assert json.loads((tmp_path / "run" / "sdpo" / "model" / "sdporec_codec.json").read_text())["kind"] == "hybrid"
    test = (data / "test.jsonl").read_text().replace('"itemList": ["', '"itemList": ["Unheard Of", "', 1)
    (data / "test.jsonl").write_text(test)
    capsys.readouterr()
    assert main([*run, "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl" in err and "'Unheard Of'" in err and not (tmp_path / "again").exists()
