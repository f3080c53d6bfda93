import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    if "MUTANT_UNDER_TEST" in os.environ:  # set by mutmut in every run it makes, stats included
        _untraced_mutmut_stats()
    # Converted GGUF files (models/sources.py) go to a cache this run owns, never the user's: the first SmolLM2
    # test converts, the others read it. pytest-xdist's workers start after this and inherit the variable.
    if "SDPOREC_CACHE" not in os.environ:
        config.sdporec_cache = tempfile.mkdtemp(prefix="sdporec-test-cache-")
        os.environ["SDPOREC_CACHE"] = config.sdporec_cache
    # Under pytest-xdist (`make test`) each worker gets its share of the cores, and so do the runs it starts:
    # torch's default of one thread per core in every worker would make them fight over the same cores.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_unconfigure(config):
    if getattr(config, "sdporec_cache", None):
        shutil.rmtree(config.sdporec_cache, ignore_errors=True)
        del os.environ["SDPOREC_CACHE"]


def _untraced_mutmut_stats() -> None:
    """mutmut's stats run (which tests reach which function) keeps its call stack in a ContextVar, which torch.compile
    cannot trace, and FlexAttention traces its mask and score functions even uncompiled. While tracing, the
    trampoline's bookkeeping is skipped: the eager calls of the same functions (create_block_mask) record the hits.
    Installed in every process mutmut runs tests in (it may import this file before its stats run), and only there."""
    try:
        import mutmut.mutation.trampoline as trampoline
    except ImportError:  # the variable without mutmut: nothing to patch
        return
    if getattr(trampoline, "_sdporec_untraced", False):
        return
    trampoline._sdporec_untraced = True
    stack, hit = trampoline.MutmutCallStack, trampoline.record_trampoline_hit

    class UntracedStack:
        @staticmethod
        def get():
            return (None, 0) if torch.compiler.is_compiling() else stack.get()

        @staticmethod
        def set(value):
            return None if torch.compiler.is_compiling() else stack.set(value)

        @staticmethod
        def reset(token):
            if token is not None:
                stack.reset(token)

    trampoline.MutmutCallStack = UntracedStack
    trampoline.record_trampoline_hit = lambda name, caller=None: (
        None if torch.compiler.is_compiling() else hit(name, caller=caller)
    )


# The longest files first (about 400, 100, 75, 65 and 50 s on 2 cores), each a work unit of pytest-xdist's
# `--dist loadfile`: started last, one of them keeps a worker busy minutes after the other has finished. `make test`
# passes --no-loadscope-reorder so xdist keeps this order; within these files and among all others the order stays
# pytest-randomly's (its shuffle runs before this hook).
LONGEST_FIRST = (
    "test_real_model.py",
    "test_importers.py",
    "test_distributed.py",
    "test_accumulation.py",
    "test_api.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable


def pytest_terminal_summary(terminalreporter, config):
    # `-q` hides pytest-randomly's header: the seed goes at the end, so a failing order can be repeated.
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and getattr(config.option, "randomly_reorganize", True):
        terminalreporter.write_line(f"random order: repeat with -p randomly --randomly-seed={seed}")


@pytest.fixture(scope="session")
def tiny_llama():
    """A 2-layer Llama over the built-in item vocabulary, for numerical tests."""
    from sdporec.models.builtin import BuiltinSize, build_builtin

    titles = [f"Artist {i}" for i in range(40)] + ["Air", "Air Supply", "Answer"]
    model, codec = build_builtin(titles, BuiltinSize(hidden=32, layers=2, heads=4), seed=0)
    return model.float(), codec


def missing(what: str) -> None:
    """A real file or model this test needs is absent: a clean skip for users, a failure where
    SDPOREC_REQUIRE_REAL=1 (CI), so the real-data and real-model tests cannot vanish unseen."""
    if os.environ.get("SDPOREC_REQUIRE_REAL") == "1":
        pytest.fail(f"SDPOREC_REQUIRE_REAL=1 and {what}", pytrace=False)
    pytest.skip(what)


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        missing(f"real data file missing: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_small_splits(directory: Path, users: int, items: int, seed: int, n_train: int, n_valid: int) -> dict:
    """`train.jsonl` and `valid.jsonl` of a small built-in data set in `directory`; returns all its splits."""
    from sdporec.data.prepare import builtin_splits
    from sdporec.data.samples import write_samples

    splits = builtin_splits(users=users, items=items, genres=4, seed=seed)
    write_samples(directory / "train.jsonl", splits["train"][:n_train])
    write_samples(directory / "valid.jsonl", splits["valid"][:n_valid])
    return splits


@pytest.fixture(scope="module")
def small_splits(tmp_path_factory) -> list[str]:
    """`--train` and `--valid` of 32 and 8 samples of a small built-in data set, for short training runs."""
    d = tmp_path_factory.mktemp("small-splits")
    write_small_splits(d, users=30, items=60, seed=3, n_train=32, n_valid=8)
    return ["--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl")]


def history_readout_reference(model, codec, sample) -> list[float]:
    """Each candidate's log-prob as the next title after the sample's history, the plain way: the history
    sequence with the candidate appended (`encode_history`), whole-row logits, only its tokens labelled."""
    from sdporec.models.logprobs import IGNORE, sequence_logprobs

    out = []
    for title in sample.candidates:
        ids, labels = codec.encode_history([*sample.history, title], IGNORE)
        answer = codec.encode_next_title(title)
        assert ids[-len(answer) :] == labels[-len(answer) :] == answer  # what the history loss trains on
        scored = [IGNORE] * (len(ids) - len(answer)) + answer
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits
        out.append(sequence_logprobs(logits, torch.tensor([scored]))[0].item())
    return out


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    """A directory with small train/valid splits and a tiny random Llama with a BPE tokenizer in model/, and
    the splits (the item-token tests start from it)."""
    from sdporec.models.families import build_family, tokenizer_texts

    d = tmp_path_factory.mktemp("hybrid")
    splits = write_small_splits(d, users=30, items=60, seed=0, n_train=16, n_valid=4)
    model, tokenizer = build_family("llama", tokenizer_texts(splits["train"]), 32, 1, 2, seed=0, vocab_size=400)
    model.save_pretrained(str(d / "model"))
    tokenizer.save_pretrained(str(d / "model"))
    return d, splits


def ranked(path) -> dict:
    """sample key -> its ranked candidates and scores, from an evaluation's predictions.jsonl."""
    import json

    return {json.loads(line)["key"]: json.loads(line)["ranked"] for line in open(path)}


class _Marker:
    """Unpickling this object creates the file `path`: proof that a pickle ran code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_pickle(marker: Path) -> bytes:
    """A pickle (as torch.save's zip or as plain pickle bytes, both are what `torch.load` reads) that creates
    `marker` when unpickled."""
    import pickle

    return pickle.dumps(_Marker(str(marker)))


def crafted_torch_file(marker: Path, path: Path) -> None:
    """A torch.save file at `path` whose unpickling creates `marker` (what a crafted optimizer.bin or
    pytorch_model.bin would be)."""
    torch.save({"state": _Marker(str(marker))}, path)


TINY_BUILTIN = ["--hidden", "32", "--layers", "1", "--heads", "2"]  # a built-in backbone trained in seconds
PIPELINE_TINY = [  # a pipeline run in seconds: the CLI tests' shared run (`run_dir`)
    "--users",
    "40",
    "--items",
    "80",
    *TINY_BUILTIN,
    "--sft-epochs",
    "1",
    "--pref-epochs",
    "1",
    "--eval-samples",
    "40",
    "--batch-size",
    "16",
    "--no-progress",
]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One tiny pipeline run that the CLI tests read (none of them writes into it)."""
    out = tmp_path_factory.mktemp("pipeline")
    proc = subprocess.run(
        [sys.executable, "-m", "sdporec", "pipeline", "--out", str(out), *PIPELINE_TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "popularity" in proc.stdout and "sdpo" in proc.stdout
    (out / "stdout.txt").write_text(proc.stdout)
    return out
