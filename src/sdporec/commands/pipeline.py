"""`sdporec pipeline`: prepare -> SFT -> DPO (K = 1) -> S-DPO (K = 3) -> evaluate each, plus popularity.

Writes DIR/metrics.json = {"popularity": M, "sft": M, "dpo": M, "sdpo": M} on the test split, each M with
hr@1, hr@5, ndcg@5, ndcg@10, mrr, valid_ratio and n, and prints them as a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sdporec.commands.compare import CompareConfig, run_compare
from sdporec.commands.groups import (
    check_threads,
    device_setting,
    progress_setting,
    report_to_setting,
    threads_setting,
    trust_remote_code_setting,
)
from sdporec.commands.preference import DPOConfig, SDPOConfig, run_preference
from sdporec.commands.prepare import PrepareConfig, run_prepare
from sdporec.commands.settings import ready, setting
from sdporec.commands.sft import SFTConfig, run_sft
from sdporec.config import require_device, require_input, save_config
from sdporec.data.candidates import catalogue, require_negatives
from sdporec.data.codec import first_unknown_title
from sdporec.data.hybrid import ITEM_TEXT, item_key
from sdporec.data.prompts import DOMAINS, TASKS
from sdporec.data.samples import read_samples, sample_error
from sdporec.errors import require, warn
from sdporec.evaluation.baselines import Popularity
from sdporec.evaluation.evaluate import evaluate_model, evaluate_ranking, format_table, write_results
from sdporec.evaluation.report import collect, write_report
from sdporec.files import read_text, text_lines
from sdporec.models.builtin import BUILTIN
from sdporec.models.item_rows import ITEM_INIT
from sdporec.models.loading import load_for_inference
from sdporec.models.scoring import running_layout
from sdporec.models.sources import resolve_model
from sdporec.outputs import SetAside, claim_out_dir
from sdporec.runs import COMPARISON, CONFIG, METRICS, MODEL, REPORT, TIMINGS, pipeline_metrics, write_json
from sdporec.training.train_config import DEFAULT_LR


@dataclass
class PipelineConfig:
    out: str = setting("runs/default", "output directory")
    data: str = setting("", "directory with train.jsonl, valid.jsonl, test.jsonl (empty: generate the built-in data)")
    domain: str = setting("music", "prompt templates to use", choices=DOMAINS)
    task: str = setting(
        "candidates",
        "candidates: prompts list the candidates (the paper's); next-item: the history alone (as `sft --task`); "
        "every stage is ranked on the test split's candidate lists",
        choices=TASKS,
    )
    users: int = setting(800, "built-in data: number of users")
    items: int = setting(300, "built-in data: number of items")
    model: str = setting(
        BUILTIN,
        "'builtin' (a small item-token Llama built here), or a pretrained model to fine-tune "
        "(a model directory, hub name, .gguf file or smollm2-135m)",
    )
    trust_remote_code: bool = trust_remote_code_setting()
    lora: bool = setting(False, "pretrained models: train a LoRA adapter instead of all weights (every stage)")
    item_tokens: bool = setting(False, "pretrained models: one added token per item (as `sft --item-tokens`)")
    item_init: str = setting("mean", "with --item-tokens: how new rows start (as `sft --item-init`)", choices=ITEM_INIT)
    item_text: str = setting(
        "title", "with --item-tokens: how prompts show items (as `sft --item-text`)", choices=ITEM_TEXT
    )
    hidden: int = setting(128, "built-in backbone: hidden size")
    layers: int = setting(2, "built-in backbone: layers")
    heads: int = setting(4, "built-in backbone: attention heads")
    sft_epochs: int = setting(6, "SFT epochs")
    sft_lr: float | None = setting(
        None,
        "SFT peak learning rate (unset: the stage's default for the backbone, "
        "DEFAULT_LR in training/train_config.py; 1e-3 for the built-in one)",
    )
    history_weight: float = setting(
        0.0,
        "SFT: weight of the history's next-item loss (as `sft --history-weight`; "
        "then each stage chooses its history readout's λ on validation and is ranked "
        "with it; greedy generation mostly stops naming listed candidates)",
    )
    dropout: float = setting(0.0, "SFT: built-in backbone dropout (as `sft --dropout`; 0.5 with the history loss)")
    pref_epochs: int = setting(1, "DPO and S-DPO epochs")
    pref_lr: float | None = setting(
        None, "DPO and S-DPO peak learning rate (unset: the stage's default, 5e-4 for the built-in backbone)"
    )
    pref_eval_every: int = setting(100, "DPO and S-DPO: validate every N optimizer steps (the best is kept)")
    beta: float = setting(1.0, "DPO and S-DPO beta")
    negatives: int = setting(3, "S-DPO negatives K (DPO uses K = 1)")
    batch_size: int = setting(16, "samples per batch")
    eval_samples: int = setting(1000, "validation samples used during training (0: all)")
    protocol: str = setting("ranking", "test protocol", choices=("ranking", "generation"))
    threads: int = threads_setting()
    device: str = device_setting()
    seed: int = setting(0, "seed of everything")
    progress: bool = progress_setting()
    report_to: str = report_to_setting("also send training logs to tensorboard or wandb")
    overwrite: bool = setting(False, "replace the outputs of an earlier pipeline run in OUT")

    def check(self) -> None:
        for name in ("sft_epochs", "pref_epochs", "batch_size", "negatives"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        check_threads(self.threads)
        require(self.history_weight >= 0, "history_weight", "must not be negative")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        builtin = self.model == BUILTIN
        require(not self.dropout or builtin, "dropout", "applies to the built-in backbone only")
        require(
            not (self.item_tokens or self.lora) or not builtin,
            "item_tokens" if self.item_tokens else "lora",
            "applies to a pretrained model (--model)",
        )
        for name, default in (("item_init", "mean"), ("item_text", "title")):
            require(self.item_tokens or getattr(self, name) == default, name, "applies with --item-tokens only")
        for name in ("sft_lr", "pref_lr"):
            require(getattr(self, name) is None or getattr(self, name) > 0, name, "must be positive")
        if not self.data:
            self.prepare_config("-").check()
        require(
            self.data or self.negatives <= 19,
            "negatives",
            "the built-in data has 20 candidates per sample: at most 19 negatives",
        )

    def resolve(self) -> None:
        if self.model != BUILTIN:
            self.model = resolve_model(self.model)
        for name in ("train", "valid", "test"):
            require_input(self.data and str(Path(self.data) / f"{name}.jsonl"), "data")
        claim_out_dir(self.out, PIPELINE_OUTPUTS, self.overwrite)
        require_device(self.device)
        if self.data:
            train = Path(self.data) / "train.jsonl"
            require_negatives(train, read_samples(train, "train"), self.negatives)
            if self.model == BUILTIN or self.item_tokens:
                require_test_titles(Path(self.data))

    def prepare_config(self, out: str) -> PrepareConfig:
        """The built-in data this pipeline generates (when no --data is given)."""
        return PrepareConfig(
            out=out,
            users=self.users,
            items=self.items,
            genres=min(12, self.items // 10),
            seed=self.seed,
            overwrite=self.overwrite,
        )


def require_test_titles(data: Path) -> None:
    """With a token per item, SFT's vocabulary is the titles of train, valid and items.txt: a test title outside it
    is a `DataError` at its row before any stage trains (the evaluation at the end could not score it)."""
    known = set(catalogue([*read_samples(data / "train.jsonl", "train"), *read_samples(data / "valid.jsonl", "valid")]))
    if (data / "items.txt").is_file():
        known.update(t.strip() for t in text_lines(read_text(data / "items.txt")))
    path = str(data / "test.jsonl")
    found = first_unknown_title(read_samples(path, "test"), lambda t: t in known or item_key(t) in known)
    if found is not None:
        s, fld, unknown = found
        raise sample_error(
            path,
            s,
            fld,
            f"title {unknown!r} is in no training or validation sample and not in "
            f"{data / 'items.txt'}, so the model gets no token for it; list every title there",
        )


PIPELINE_OUTPUTS = (CONFIG, METRICS, TIMINGS, COMPARISON, "data", "sft", "dpo", "sdpo", "eval", "report")


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Every stage; with --overwrite the earlier run's outputs wait in OUT/.replaced and come back if a stage
    fails, so OUT holds one whole run. The config is saved last: it never describes stages that are not there."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data).resolve() if cfg.data else None  # --data inside OUT stays where it is
    outputs = tuple(o for o in PIPELINE_OUTPUTS if data is None or not data.is_relative_to((out / o).resolve()))
    replaced = SetAside(out, outputs) if cfg.overwrite else None
    try:
        results = _stages(cfg, out)
    except BaseException:
        if replaced is not None and replaced.restore():
            warn(f"the pipeline did not finish: the earlier run's outputs in {out} are back in place")
        raise
    if replaced is not None:
        replaced.drop()
    save_config(cfg, out)
    return results


def _stages(cfg: PipelineConfig, out: Path) -> dict:
    timings: dict[str, float] = {}
    started = time.time()
    data = Path(cfg.data) if cfg.data else out / "data"
    if not cfg.data:
        run_prepare(ready(cfg.prepare_config(str(data))))
        timings["prepare"] = round(time.time() - started, 1)
    files = {name: str(data / f"{name}.jsonl") for name in ("train", "valid", "test")}
    titles = str(data / "items.txt") if (data / "items.txt").is_file() else ""
    # Each stage's config becomes ready as the CLI's would, once the stage before it has written its model.
    for name, run, config in _training_stages(cfg, out, files, titles):
        print(f"\n== {name} ==")
        t0 = time.time()
        run(ready(config))
        timings[name] = round(time.time() - t0, 1)
    test = read_samples(files["test"], "test")
    results = _evaluations(cfg, out, read_samples(files["train"], "train"), test, timings)
    timings["total"] = round(time.time() - started, 1)
    write_json(out / METRICS, pipeline_metrics(results))
    write_json(out / TIMINGS, timings)
    print(f"\nTest split ({cfg.protocol}), {len(test)} samples:\n{format_table(results)}")
    print(f"\nWall time: {timings['total']:.0f} s. Outputs in {out}/ (metrics.json, eval/, sft/, dpo/, sdpo/)")
    # Whether S-DPO's difference from SFT and DPO is real on these samples, or noise: paired bootstrap intervals.
    print(f"\nS-DPO against SFT and DPO on the same {len(test)} test samples:")
    run_compare(
        ready(
            CompareConfig(
                predictions=[str(out / "eval" / n) for n in ("sdpo", "sft", "dpo")],
                names=["S-DPO", "SFT", "DPO"],
                seed=cfg.seed,
                out=str(out / COMPARISON),
            )
        )
    )
    runs, finals = collect([str(out)])
    figures = write_report(runs, finals, out / "report")
    print(f"Report: {out / 'report' / REPORT} with figures {', '.join(figures)}")
    return results


def _training_stages(cfg: PipelineConfig, out: Path, files: dict[str, str], titles: str) -> list[tuple]:
    """(name, runner, config) of SFT, DPO and S-DPO, in order; each config is made ready just before it runs."""
    common = dict(
        train=files["train"],
        valid=files["valid"],
        domain=cfg.domain,
        task=cfg.task,
        batch_size=cfg.batch_size,
        eval_samples=cfg.eval_samples,
        device=cfg.device,
        threads=cfg.threads,
        seed=cfg.seed,
        progress=cfg.progress,
        report_to=cfg.report_to,
        overwrite=cfg.overwrite,
        trust_remote_code=cfg.trust_remote_code,
    )
    backbone = "builtin" if cfg.model == BUILTIN else "lora" if cfg.lora else "full"
    sft = SFTConfig(
        out=str(out / "sft"),
        model=cfg.model,
        titles=titles,
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        epochs=cfg.sft_epochs,
        lr=cfg.sft_lr or DEFAULT_LR[("sft", backbone)],
        history_weight=cfg.history_weight,
        dropout=cfg.dropout,
        lora=cfg.lora,
        item_tokens=cfg.item_tokens,
        item_init=cfg.item_init,
        item_text=cfg.item_text,
        **common,
    )
    stages = [("sft", run_sft, sft)]
    for name, config, k in (("dpo", DPOConfig, 1), ("sdpo", SDPOConfig, cfg.negatives)):
        preference = config(
            out=str(out / name),
            model=str(out / "sft" / MODEL),
            negatives=k,
            beta=cfg.beta,
            epochs=cfg.pref_epochs,
            lr=cfg.pref_lr or DEFAULT_LR[("preference", backbone)],
            eval_every=cfg.pref_eval_every,
            lora=cfg.lora,
            **common,
        )
        stages.append((name, run_preference, preference))
    return stages


def _evaluations(cfg: PipelineConfig, out: Path, train: list, test: list, timings: dict) -> dict[str, dict]:
    """Popularity and each trained stage's model on the test split, each written to eval/NAME; the metrics by name."""
    results: dict[str, dict] = {}
    metrics, rows = evaluate_ranking(Popularity(train), test)
    write_results(out / "eval" / "popularity", metrics, rows, {"protocol": "ranking"})
    results["popularity"] = metrics
    for name in ("sft", "dpo", "sdpo"):
        t0 = time.time()
        loaded = load_for_inference(
            str(out / name / MODEL), domain=cfg.domain, device=cfg.device, ranking=cfg.protocol == "ranking"
        )
        readout = loaded.history_readout
        metrics, rows = evaluate_model(
            loaded.model,
            loaded.codec,
            test,
            cfg.protocol,
            loaded.domain,
            cfg.batch_size,
            progress=cfg.progress,
            history_readout=readout,
            task=loaded.task,
        )
        layout = running_layout("auto", loaded.model, loaded.codec.short_answers)
        extra = {
            "protocol": cfg.protocol,
            "history_readout": readout,
            "layout": layout if cfg.protocol == "ranking" else None,
        }
        write_results(out / "eval" / name, metrics, rows, extra)
        results[name] = metrics
        timings[f"evaluate_{name}"] = round(time.time() - t0, 1)
    return results
