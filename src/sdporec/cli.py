"""The `sdporec` command line: one subcommand per typed config."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from sdporec.commands.audit import AuditConfig, run_audit
from sdporec.commands.baseline import BaselineConfig, run_baseline
from sdporec.commands.compare import CompareConfig, run_compare
from sdporec.commands.evaluate import EvaluateConfig, run_evaluate
from sdporec.commands.export import ExportConfig, run_export
from sdporec.commands.init_model import InitModelConfig, run_init_model
from sdporec.commands.pipeline import PipelineConfig, run_pipeline
from sdporec.commands.preference import DPOConfig, SDPOConfig, run_preference
from sdporec.commands.prepare import PrepareConfig, run_prepare
from sdporec.commands.recommend import RecommendConfig, run_recommend
from sdporec.commands.report import ReportConfig, run_report
from sdporec.commands.runner import run_command
from sdporec.commands.settings import add_arguments, from_arguments
from sdporec.commands.sft import SFTConfig, run_sft
from sdporec.errors import BusyError, ConfigError, DataError, OutputError
from sdporec.evaluation.metrics import NonFiniteError
from sdporec.models.loading import quiet_transformers

COMMANDS = {
    "prepare": (PrepareConfig, run_prepare, "write train/valid/test samples (built-in, MovieLens-100K, CSV logs)"),
    "audit": (AuditConfig, run_audit, "sample counts, candidate checks and the leak check of a sample file"),
    "sft": (SFTConfig, run_sft, "supervised fine-tuning on the target titles"),
    "dpo": (DPOConfig, run_preference, "DPO from an SFT checkpoint (K = 1 negative per sample by default)"),
    "sdpo": (SDPOConfig, run_preference, "Softmax-DPO from an SFT checkpoint (K = 3 negatives per sample by default)"),
    "evaluate": (EvaluateConfig, run_evaluate, "HR@k, NDCG@k, MRR (ranking) or the paper's generation protocol"),
    "pipeline": (PipelineConfig, run_pipeline, "prepare, SFT, DPO, S-DPO and evaluate, end to end"),
    "baseline": (
        BaselineConfig,
        run_baseline,
        "popularity, item counts, item-kNN, SASRec or GRU4Rec on the same candidates, or the whole catalogue",
    ),
    "recommend": (RecommendConfig, run_recommend, "rank candidates for one history"),
    "compare": (
        CompareConfig,
        run_compare,
        "metrics of evaluations of the same samples, with paired bootstrap intervals of their differences",
    ),
    "report": (ReportConfig, run_report, "figures and report.md from run directories"),
    "init-model": (
        InitModelConfig,
        run_init_model,
        "a model of a supported family from a config, with a tokenizer trained on the data (no download)",
    ),
    "export": (ExportConfig, run_export, "a checkpoint as a plain Hugging Face model (--merge folds LoRA in)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdporec", description="Language-model recommenders trained with SFT, DPO and Softmax-DPO."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command, cls)
        command.add_argument(
            "--debug",
            action="store_true",
            default=False,
            help="on an error, show Python's traceback instead of one line",
        )
    return parser


def _error_line(e: BaseException) -> tuple[str, int]:
    """One line for an error that ends a command, and the exit status."""
    import torch

    if isinstance(e, (ConfigError, DataError, NonFiniteError, OutputError, BusyError)):
        return str(e), 2
    if isinstance(e, KeyboardInterrupt):
        return "interrupted; files already written are complete (a training run continues with --resume)", 130
    if isinstance(e, torch.OutOfMemoryError):
        return (
            "out of GPU memory; try a smaller --batch-size with a larger --grad-accum, "
            "--gradient-checkpointing, --lora or --load-in-4bit"
        ), 3
    if isinstance(e, MemoryError):
        return "out of memory; try a smaller --batch-size or --gradient-checkpointing", 3
    if isinstance(e, OSError) and e.filename is not None:
        return f"file {e.filename}: {e.strerror or e}", 2
    where = e.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    place = f" at {Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}" if where else ""
    return (
        f"internal error{place}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
        "(rerun with --debug for the traceback, and please report it)"
    ), 1


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"sdporec: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_transformers()
    if not args.debug:  # warnings as one line each, without the source line Python adds
        warnings.formatwarning = _one_line_warning
    cls, run, _ = COMMANDS[args.command]
    try:
        cfg = from_arguments(cls, args)
        result = run_command(run, cfg)
    except BrokenPipeError:
        raise  # stdout's reader went away: `entry` ends quietly
    except (Exception, KeyboardInterrupt) as e:
        if args.debug:
            raise
        line, code = _error_line(e)
        print(f"sdporec {args.command}: error: {line}", file=sys.stderr)
        return code
    if args.command in ("evaluate", "prepare", "init-model", "export") and os.environ.get("RANK", "0") == "0":
        import json

        print(json.dumps(result, indent=2))
    if "RANK" in os.environ:
        # Under torchrun / accelerate launch: the process group lives for the whole process, so it is torn
        # down here, once, after the command's outputs are written.
        from sdporec.training.distributed import finish

        finish()
    return 0


def entry() -> None:
    """The `sdporec` command. Under torchrun / accelerate launch, once `main` has written every output and
    torn the process group down, the process leaves without interpreter teardown: there, C++ destructors
    of torch.distributed's threads can race and abort a finished rank ("terminate called without an
    active exception", then SIGABRT; measured about 1 run in 50 of a 2-process SFT on CPU), which the
    launcher reports as a failed run."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`sdporec compare ... | head`): nothing left to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    if "RANK" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
