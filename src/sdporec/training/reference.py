"""The reference pass, apart from training.

Before each preference epoch, the frozen reference scores every answer of that epoch's batches (chosen +
K negatives, in training's answer slots, `data/batching.py`) in one no-gradient pass, so no reference model is
held while the policy trains. Candidate lists and negatives change per epoch, so the cache is per epoch.
Results are stored on disk under a key made of everything that changes them (`reference_identity`: the
data, the model's files, the epoch's prompts and answers, dtype, 4-bit loading, mixed precision, layout,
device type, the library versions and the source of the code that builds and scores the inputs, and
`CACHE_FORMAT`) and reused by any later run with the same key (a DPO and an S-DPO run from one SFT
checkpoint share nothing but the prompts, as their K differs; reruns of either reuse everything).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdporec._version import __version__
from sdporec.data.batching import AnswerBatch
from sdporec.data.samples import Sample
from sdporec.files import atomic_path
from sdporec.models.logprobs import answer_logprobs_packed


def model_fingerprint(path: str | Path) -> str:
    """Identity of a checkpoint: its files' names, sizes and modification times (cheap for 7B models;
    any re-save changes it)."""
    path = Path(path)
    if path.is_file():  # a GGUF file
        st = path.stat()
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    if not path.is_dir():
        return str(path)  # a hub name: its revision is fixed by the local hub cache
    parts = []
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# Bumped whenever what a cache file holds, or how its numbers are computed, changes in a way the other
# parts of the key cannot see.
CACHE_FORMAT = 3  # 3: safetensors, the keys in its metadata (2 was a torch.save pickle)


def code_digest() -> str:
    """The source of the modules that turn samples into token ids and token ids into log-probs."""
    from sdporec.data import batching, codec, hybrid, prompts
    from sdporec.models import flex, logprobs, scoring

    h = hashlib.sha256()
    for module in (batching, codec, flex, hybrid, logprobs, prompts, scoring):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "sdporec": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def inputs_digest(rows: Sequence[tuple[object, Sequence[str]]]) -> str:
    """One (prompt, answer titles) pair per sample, in order: what the reference scores in an epoch."""
    h = hashlib.sha256()
    for prompt, answers in rows:
        h.update(json.dumps([repr(prompt), list(answers)], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def reference_identity(**settings: object) -> dict:
    """Everything a cached reference pass depends on: `settings` (the run's: data, model, dtype, 4-bit,
    mixed precision, layout, device, chat, the epoch's inputs...) plus the format, versions and code."""
    return {"format": CACHE_FORMAT, "versions": library_versions(), "code": code_digest(), **settings}


def reference_logps(
    reference_context: Callable,
    samples: Sequence[Sample],
    make_batch: Callable[[Sequence[Sample]], AnswerBatch],
    batch_size: int,
    device,
    cache_file: Path | None,
    progress: bool = True,
    logprobs: Callable = answer_logprobs_packed,
) -> dict[str, torch.Tensor]:
    """sample key -> reference log-probs (1+K,) for the epoch's samples, from `cache_file` when present."""
    if cache_file is not None and cache_file.is_file():
        cached = read_cache(cache_file)
        if cached is not None and set(cached) >= {s.key for s in samples}:
            return cached
    keys, rows = [], []
    with reference_context() as ref:
        for start in tqdm(
            range(0, len(samples), batch_size), desc="reference pass", unit="batch", disable=not progress, leave=False
        ):
            chunk = samples[start : start + batch_size]
            logps, _ = logprobs(ref, make_batch(chunk).to(device))  # (B, 1+K)
            keys.extend(s.key for s in chunk)
            rows.append(logps.float().cpu())
    logps = torch.cat(rows)
    if cache_file is not None:
        from safetensors.torch import save_file

        with atomic_path(cache_file) as tmp:
            save_file(
                {"logps": logps.contiguous()},
                str(tmp),
                metadata={"format": str(CACHE_FORMAT), "keys": json.dumps(keys)},
            )
    return dict(zip(keys, logps))


def read_cache(cache_file: Path) -> dict[str, torch.Tensor] | None:
    """A cache file's sample key -> log-probs; None where it is damaged or of another format (a miss: it is
    recomputed and replaced). A safetensors file and JSON: nothing in it can run code."""
    from safetensors import safe_open

    try:
        with safe_open(str(cache_file), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != str(CACHE_FORMAT):
                return None
            logps, keys = f.get_tensor("logps"), json.loads(meta["keys"])
    except Exception:  # noqa: BLE001 - any damage (safetensors' own errors, JSON, a missing entry) is a miss
        return None
    if not isinstance(keys, list) or len(keys) != len(logps):
        return None
    return dict(zip(map(str, keys), logps))
