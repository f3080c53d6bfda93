"""Models of the supported families built from a config, with a tokenizer trained on the data: no download.

`sdporec init-model --family F --train FILE --out DIR` writes a Hugging Face checkpoint (config, random
weights, a byte-level BPE tokenizer trained on the data's prompts and titles) that every command loads like
a pretrained model (`--model DIR`), titles as text. It is how the tests run each family on a CPU, and how
to get a ~1B-parameter model of a real architecture on a GPU without downloading one. Real pretrained
checkpoints need none of this: pass their directory or hub name as `--model`. The command is
`sdporec.commands.init_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sdporec.data.prompts import TEMPLATES, build_prompt

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gpt2")


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes, no unknown tokens) with our special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sdporec.data.codec import SPECIALS

    tok = Tokenizer(models.BPE(unk_token=SPECIALS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIALS["pad"],
        bos_token=SPECIALS["bos"],
        eos_token=SPECIALS["eos"],
        unk_token=SPECIALS["unk"],
    )


def family_config(
    family: str,
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int = 0,
    intermediate: int = 0,
    max_positions: int = 1024,
    special_ids: dict[str, int] | None = None,
):
    """The family's own config class with the given size; ids of pad / bos / eos from `special_ids`."""
    from transformers import AutoConfig, GPT2Config

    ids = special_ids or {}
    common = dict(
        vocab_size=vocab_size,
        pad_token_id=ids.get("pad"),
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        tie_word_embeddings=True,
    )
    if family == "gpt2":
        return GPT2Config(
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_positions,
            n_inner=intermediate or 4 * hidden,
            **common,
        )
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    return AutoConfig.for_model(
        family,
        hidden_size=hidden,
        intermediate_size=intermediate or 3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        **common,
    )


def build_family(
    family: str,
    texts: Sequence[str],
    hidden: int,
    layers: int,
    heads: int,
    seed: int,
    vocab_size: int = 2000,
    kv_heads: int = 0,
    intermediate: int = 0,
):
    """(model, tokenizer): a randomly initialised model of `family` and a tokenizer trained on `texts`."""
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    special = {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    cfg = family_config(family, len(tokenizer), hidden, layers, heads, kv_heads, intermediate, special_ids=special)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, trust_remote_code=False), tokenizer


def build_text_backbone(texts: Sequence[str], hidden: int, layers: int, heads: int, seed: int, vocab_size: int = 2000):
    """A Llama over a BPE tokenizer trained on `texts`, with its codec (benchmarks and tests)."""
    from sdporec.data.codec import TextCodec

    model, tokenizer = build_family("llama", texts, hidden, layers, heads, seed, vocab_size)
    return model, TextCodec(tokenizer)


def tokenizer_texts(samples, limit: int = 5000) -> list[str]:
    """What the tokenizer learns from: prompts in every template of every domain, and every title."""
    templates = [(d, i) for d in TEMPLATES for i in range(len(TEMPLATES[d]))]
    texts = [
        build_prompt(s.history, s.candidates, *templates[n % len(templates)]).text
        for n, s in enumerate(samples[:limit])
    ]
    titles = sorted({t for s in samples for t in (*s.history, *s.candidates, s.target)})
    return texts + [" " + t for t in titles]
