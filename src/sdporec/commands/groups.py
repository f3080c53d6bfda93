"""The setting groups several commands share, declared once: the device and threads, model loading (dtype,
4-bit, chat template, scoring layout) and reports (progress bars, logging backends).

Each is a function that returns the field, so that every config keeps its own field order (its flags' order
in `--help`, its keys' order in the saved `config.yaml`) and the few help texts that say more for one command
(`evaluate --device` under torchrun, training's `--layout`) keep saying it. The checks of a group are
functions too (`check_threads`, `require_backend`)."""

from __future__ import annotations

import importlib.util

from sdporec.commands.settings import setting
from sdporec.data.codec import CHAT_CHOICES
from sdporec.errors import require
from sdporec.models.scoring import LAYOUTS

DTYPES = ("float32", "bfloat16", "float16")
REPORT_TO = ("none", "tensorboard", "wandb")

DEVICE_HELP = "cpu, cuda, cuda:N or auto"
# auto: what the model was trained with, said of a checkpoint being trained further or of one being read.
CHAT_HELP = (
    "text prompts in the tokenizer's chat template: auto (what {checkpoint} was trained with; else on where "
    "the tokenizer has {one}), on or off"
)


# -- device and threads
def device_setting(more: str = ""):
    return setting("auto", DEVICE_HELP + more)


def threads_setting():
    return setting(0, "CPU threads for PyTorch (0: PyTorch's default)")


def check_threads(threads: int) -> None:
    require(threads >= 0, "threads", "must not be negative (0: PyTorch's default)")


# -- model loading
def dtype_setting(help: str = "weights' dtype"):
    return setting("float32", help, choices=DTYPES)


def load_in_4bit_setting(help: str):
    return setting(False, help)


def trust_remote_code_setting():
    return setting(
        False,
        "let a model or tokenizer run its own Python code (a model type transformers does not "
        "know, from the hub or a folder): only for models from sources you trust; without it such a "
        "model is refused, never asked about",
    )


def chat_template_setting(training: bool = False):
    words = (
        {"checkpoint": "a checkpoint", "one": "a template"}
        if training
        else {"checkpoint": "the checkpoint", "one": "one"}
    )
    return setting("auto", CHAT_HELP.format(**words), choices=CHAT_CHOICES)


def layout_setting(help: str):
    return setting("auto", help, choices=LAYOUTS)


# -- reports
def progress_setting():
    return setting(True, "show progress bars")


def report_to_setting(help: str):
    return setting("none", help, choices=REPORT_TO)


def require_backend(report_to: str) -> None:
    """The logging backend asked for is installed."""
    for backend in REPORT_TO[1:]:
        require(
            report_to != backend or importlib.util.find_spec(backend) is not None,
            "report_to",
            f"{backend} is not installed (pip install {backend})",
        )
