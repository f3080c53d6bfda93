"""`sdporec init-model`: a model of a supported family from a config, with a tokenizer trained on the data
(`InitModelConfig`, `run_init_model`); the building is `sdporec.models.families`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sdporec.commands.settings import setting
from sdporec.config import require_input
from sdporec.data.samples import read_samples
from sdporec.errors import require
from sdporec.models.checkpoints import claim_checkpoint_dir, save_initial_model
from sdporec.models.families import FAMILIES, build_family, tokenizer_texts


@dataclass
class InitModelConfig:
    family: str = setting("llama", "architecture", choices=FAMILIES)
    train: str = setting("", "samples whose prompts and titles the tokenizer is trained on")
    out: str = setting("", "checkpoint directory to write")
    hidden: int = setting(64, "hidden size")
    layers: int = setting(2, "transformer blocks")
    heads: int = setting(4, "attention heads")
    kv_heads: int = setting(0, "key/value heads (grouped-query attention; 0: as many as heads)")
    intermediate: int = setting(0, "MLP width (0: 3 x hidden; GPT-2: 4 x hidden)")
    vocab_size: int = setting(2000, "BPE vocabulary size")
    seed: int = setting(0, "initialisation seed")
    overwrite: bool = setting(False, "replace an earlier checkpoint in OUT")

    def check(self) -> None:
        require(bool(self.train), "train", "required")
        require(bool(self.out), "out", "required")
        require(self.hidden % self.heads == 0, "hidden", "must be a multiple of heads")
        require(self.kv_heads == 0 or self.heads % self.kv_heads == 0, "kv_heads", "must divide heads")
        require(self.vocab_size >= 300, "vocab_size", "must be at least 300 (the 256 bytes and the specials)")

    def resolve(self) -> None:
        require_input(self.train, "train")
        claim_checkpoint_dir(self.out, self.overwrite)


def run_init_model(cfg: InitModelConfig) -> dict:
    samples = read_samples(cfg.train, "train")
    model, tokenizer = build_family(
        cfg.family,
        tokenizer_texts(samples),
        cfg.hidden,
        cfg.layers,
        cfg.heads,
        cfg.seed,
        cfg.vocab_size,
        cfg.kv_heads,
        cfg.intermediate,
    )
    n_params = sum(p.numel() for p in model.parameters())
    save_initial_model(model, tokenizer, cfg.out, {"stage": "init", "config": asdict(cfg), "parameters": n_params})
    return {"family": cfg.family, "parameters": n_params, "vocab": len(tokenizer), "out": str(cfg.out)}
