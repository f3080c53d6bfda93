"""An item-token LoRA checkpoint outside sdporec: loaded by plain transformers + peft it scores as sdporec
does, and it merges for inference."""

import pytest
import torch
from test_hybrid_stages import CLI_FAST

from sdporec.cli import main
from sdporec.data.hybrid import item_token
from sdporec.data.prompts import build_prompt


def test_a_lora_checkpoint_loads_in_plain_transformers_and_peft_and_merges_for_inference(tiny_text_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdporec.evaluation.scoring import LMScorer
    from sdporec.models.loading import load_for_inference, load_model
    from sdporec.models.lora import peft_quietly

    d, splits = tiny_text_model
    assert (
        main(
            [
                "sft",
                "--model",
                str(d / "model"),
                "--item-tokens",
                "--lora",
                "--out",
                str(tmp_path / "sft"),
                "--train",
                str(d / "train.jsonl"),
                *CLI_FAST,
            ]
        )
        == 0
    )
    path = tmp_path / "sft" / "model"
    ours, codec = load_model(str(path))
    with peft_quietly():
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(path / "base")), str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    s = splits["valid"][0]
    text = codec.prompt_text(build_prompt(s.history, s.candidates, "music")) + " " + item_token(0)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0, -1].item() == codec.token_ids[0]  # the saved tokenizer knows the item tokens
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)
    # Inference merges a float32 adapter (a plain transformers model scoring as the adapter) and leaves a
    # bfloat16 one unmerged.
    unmerged = LMScorer(ours, codec, "music", progress=False)(splits["valid"][:2])
    inference = load_for_inference(str(path), device="cpu")
    assert not hasattr(inference.model, "peft_config")
    merged_scores = LMScorer(inference.model, codec, "music", progress=False)(splits["valid"][:2])
    assert torch.allclose(torch.tensor(merged_scores), torch.tensor(unmerged), atol=1e-5)
    assert hasattr(load_for_inference(str(path), device="cpu", dtype="bfloat16").model, "peft_config")
    merged = ours.merge_and_unload()
    trained = merged.get_input_embeddings().weight
    base = AutoModelForCausalLM.from_pretrained(str(path / "base")).get_input_embeddings().weight
    rows = torch.tensor(codec.token_ids)
    assert not torch.allclose(trained[rows], base[rows])  # the item rows were trained
    keep = torch.ones(base.shape[0], dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(trained[keep], base[keep])  # and nothing else of the embedding
    head = merged.get_output_embeddings().weight
    assert torch.equal(head[rows], trained[rows])  # the tied head scores with the trained rows
    scores = LMScorer(*load_model(str(path)), "music", progress=False)(splits["valid"][:2])
    paper = LMScorer(*load_model(str(path)), "music", progress=False, layout="paper")(splits["valid"][:2])
    for a, b in zip(scores, paper):
        assert a == pytest.approx(b, abs=1e-5)
