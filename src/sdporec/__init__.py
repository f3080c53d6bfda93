"""sdporec: language-model recommenders trained with SFT, DPO and Softmax-DPO (S-DPO).

The command line (`sdporec --help`) and this Python API run the same code with the same configs:

    prepare(...)          train/valid/test samples: built-in, MovieLens-100K or your own CSV log
    sft(...)              supervised fine-tuning on the target titles
    dpo(...), sdpo(...)   DPO (K = 1) and Softmax-DPO (K = 3) from an SFT checkpoint
    evaluate(...)         HR@k, NDCG@k, MRR (ranking) or the paper's generation protocol
    pipeline(...)         all of the above on the built-in data, end to end
    Recommender           a checkpoint that ranks candidate titles for a history

Each function takes its config (`PrepareConfig`, `SFTConfig`, `DPOConfig`, `SDPOConfig`, `EvaluateConfig`,
`PipelineConfig`) or that config's settings as keyword arguments. Errors in settings or data raise
`ConfigError` or `DataError`. Example: examples/quickstart.py.
"""

from __future__ import annotations

import importlib

from sdporec._version import __version__ as __version__

_PUBLIC = {
    "prepare": "api",
    "sft": "api",
    "dpo": "api",
    "sdpo": "api",
    "evaluate": "api",
    "pipeline": "api",
    "Recommender": "evaluation.recommend",
    "PrepareConfig": "commands.prepare",
    "SFTConfig": "commands.sft",
    "DPOConfig": "commands.preference",
    "SDPOConfig": "commands.preference",
    "EvaluateConfig": "commands.evaluate",
    "PipelineConfig": "commands.pipeline",
    "ConfigError": "errors",
    "DataError": "errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """The public names load on first use, so that `import sdporec` stays light (no torch)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'sdporec' has no attribute {name!r}")
    module = importlib.import_module(f".{_PUBLIC[name]}", __name__)
    # Every public name of that module at once: importing it may have bound a submodule of the same name.
    globals().update({n: getattr(module, n) for n, m in _PUBLIC.items() if m == _PUBLIC[name]})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
