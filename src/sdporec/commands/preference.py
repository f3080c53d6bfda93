"""`sdporec dpo` and `sdporec sdpo`: preference training from an SFT checkpoint (`DPOConfig`, `SDPOConfig`,
`run_preference`); the recipe is `sdporec.training.preference`."""

from __future__ import annotations

from dataclasses import dataclass

from sdporec.commands.settings import setting
from sdporec.commands.train_config import TrainConfig, default_lr, default_readouts
from sdporec.data.candidates import NEGATIVE_SOURCES, catalogue
from sdporec.errors import require
from sdporec.models.checkpoints import Checkpoint, is_adapter
from sdporec.models.loading import load_codec_of
from sdporec.models.sources import require_no_4bit_gguf, resolve_model
from sdporec.outputs import require_apart
from sdporec.training.losses import LOSSES
from sdporec.training.preference import PreferenceRecipe, preference_policy
from sdporec.training.run import start_run
from sdporec.training.trainer import Trainer

REWARD_TOKENS = ("answer", "title")


@dataclass
class PreferenceConfig(TrainConfig):
    model: str = setting("", "the SFT checkpoint directory (its 'model' folder); also the frozen reference")
    loss: str = setting(
        "sdpo", "sdpo: Softmax-DPO over K negatives; dpo: sigmoid DPO, one pair per negative", choices=tuple(LOSSES)
    )
    negatives: int = setting(3, "K, negatives per sample, drawn from the prompt's non-target candidates")
    beta: float = setting(1.0, "beta: scale of the implicit reward")
    epochs: int = setting(1, "passes over the training samples")
    reference_pass: str = setting(
        "precompute",
        "precompute: score each epoch's answers with the reference before "
        "the epoch, cached on disk, no reference model held while training; online: "
        "score them batch by batch",
        choices=("precompute", "online"),
    )
    reference_cache: str = setting(
        "",
        "directory for cached reference log-probs (default: reference_cache/ "
        "beside the SFT checkpoint; 'none' to keep them in memory only)",
    )
    negatives_from: str = setting(
        "uniform",
        "how each sample's K negatives are chosen among its prompt's non-target "
        "candidates, every epoch: uniform (at random), popular (at random, weighted by how "
        "often each is a training target) or model (the K the reference, the SFT model, "
        "scores highest: hard negatives). --task next-item shows no list: uniform draws from the "
        "catalogue outside the history and target, popular from the whole catalogue, model the "
        "reference's top K of the whole catalogue with item tokens (of the epoch's drawn list with text titles)",
        choices=NEGATIVE_SOURCES,
    )
    sft_weight: float = setting(
        0.0,
        "weight of an SFT term (the chosen answer's per-token loss) added to each "
        "sample's preference loss, against the chosen answer's likelihood falling",
    )
    history_weight: float = setting(
        0.0,
        "weight of the history's next-item loss (as `sft --history-weight`, per "
        "labelled token) added to each sample's preference loss: keeps what `evaluate "
        "--history-readout` reads",
    )
    reward_tokens: str = setting(
        "answer",
        "which tokens of an answer its log-prob (and so the implicit reward) sums: "
        "answer (title + EOS, the paper's) or title (EOS left out: the loss then no longer "
        "pushes EOS down after every negative's title, which makes generation stop less "
        "often; bench/answer_split.py measures it)",
        choices=REWARD_TOKENS,
    )

    def check(self) -> None:
        require(bool(self.model), "model", "required: the SFT checkpoint to start from")
        super().check()
        require(self.negatives >= 1, "negatives", "must be at least 1")
        require(self.beta > 0, "beta", "must be positive")
        require(self.sft_weight >= 0, "sft_weight", "must not be negative")
        require(self.history_weight >= 0, "history_weight", "must not be negative")

    def resolve(self) -> None:
        self.model = resolve_model(self.model)
        record = Checkpoint.read(self.model)  # the starting checkpoint's record, read once here
        self.domain, self.task = record.domain(self.domain), record.task(self.task)
        default_lr(self, "preference", _backbone(record, self.model, self.lora))
        super().resolve()
        require_apart(self.out, {"model": self.model})
        require_no_4bit_gguf(self.model, self.load_in_4bit)
        default_readouts(self, self.history_weight > 0 or record.learned_history)  # as learns_history


def _backbone(record: Checkpoint, model: str, lora: bool) -> str:
    """What preference training trains: `builtin` (an SFT checkpoint of the built-in backbone, all weights),
    `lora` (a new adapter, or the SFT checkpoint's own adapter) or `full` (all weights of a text model)."""
    if record.kind == "builtin" and not lora:
        return "builtin"
    return "lora" if lora or is_adapter(model) else "full"


@dataclass
class DPOConfig(PreferenceConfig):
    """`sdporec dpo`: DPO, one sigmoid term per (chosen, negative) pair; K = 1 by default."""

    loss: str = setting(
        "dpo",
        "dpo: sigmoid DPO, one pair per negative (averaged over them); sdpo: Softmax-DPO "
        "over K negatives (what `sdporec sdpo` runs)",
        choices=tuple(LOSSES),
    )
    negatives: int = setting(1, "K, negatives per sample, drawn from the prompt's non-target candidates")


@dataclass
class SDPOConfig(PreferenceConfig):
    """`sdporec sdpo`: Softmax-DPO, one softmax over the chosen answer and K negatives; K = 3 by default."""

    loss: str = setting(
        "sdpo",
        "sdpo: Softmax-DPO over K negatives; dpo: sigmoid DPO, one pair per negative (what `sdporec dpo` runs)",
        choices=tuple(LOSSES),
    )
    negatives: int = setting(
        3, "K, negatives per sample, drawn from the prompt's non-target candidates (K = 1: DPO's loss)"
    )


def run_preference(cfg: PreferenceConfig) -> dict:
    """Set-up (data, policy and reference), then the trainer with the preference recipe."""
    run = start_run(cfg, load_codec_of(cfg.model, cfg.chat_template), cfg.model, cfg.negatives)
    with run.setting_up(cfg):
        policy, codec, base_dir = preference_policy(cfg, run)
        recipe = PreferenceRecipe(cfg, run, policy, codec, base_dir)
        trainer = Trainer(cfg, run, policy.model, codec, catalogue(run.train), recipe)
    if run.main:
        print(
            f"{cfg.loss}: {len(run.train)} training samples, K={cfg.negatives}, beta={cfg.beta}, from {cfg.model}, "
            f"reference {cfg.reference_pass}; {run.acc.num_processes} process(es) on {run.acc.device}"
        )
    return run.fit(trainer.fit)
