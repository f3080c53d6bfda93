"""The reference cache's key: every setting that changes the reference log-probs changes it."""

import torch
from conftest import crafted_pickle

from sdporec.data.samples import Sample
from sdporec.training import reference
from sdporec.training.reference import (
    CACHE_FORMAT,
    cache_key,
    inputs_digest,
    read_cache,
    reference_identity,
    reference_logps,
)

BASE = {
    "data": "d" * 64,
    "model": "m" * 64,
    "seed": 0,
    "k": 3,
    "domain": "music",
    "keep_candidates": False,
    "dtype": "float32",
    "load_in_4bit": False,
    "mixed_precision": "no",
    "layout": "packed",
    "device": "cpu",
    "chat": False,
    "codec": "items",
    "epoch": 0,
    "inputs": "i" * 24,
}
CHANGES = {
    "data": "e" * 64,
    "model": "n" * 64,
    "seed": 1,
    "k": 1,
    "domain": "movies",
    "keep_candidates": True,
    "dtype": "bfloat16",
    "load_in_4bit": True,
    "mixed_precision": "bf16",
    "layout": "cache",
    "device": "cuda",
    "chat": True,
    "codec": "text",
    "epoch": 1,
    "inputs": "j" * 24,
}


def test_each_setting_changes_the_key():
    base = cache_key(**reference_identity(**BASE))
    assert cache_key(**reference_identity(**BASE)) == base  # deterministic
    keys = {name: cache_key(**reference_identity(**{**BASE, name: value})) for name, value in CHANGES.items()}
    assert set(CHANGES) == set(BASE) and base not in keys.values() and len(set(keys.values())) == len(CHANGES)


def test_format_versions_and_code_are_in_the_key(monkeypatch):
    base = cache_key(**reference_identity(**BASE))
    monkeypatch.setattr(reference, "CACHE_FORMAT", CACHE_FORMAT + 1)
    assert cache_key(**reference_identity(**BASE)) != base
    monkeypatch.undo()
    monkeypatch.setattr(reference, "library_versions", lambda: {"transformers": "0.0"})
    assert cache_key(**reference_identity(**BASE)) != base
    monkeypatch.undo()
    monkeypatch.setattr(reference, "code_digest", lambda: "other")
    assert cache_key(**reference_identity(**BASE)) != base


def test_inputs_digest_sees_prompts_answers_and_order():
    rows = [("prompt a", ["x", "y"]), ("prompt b", ["z", "w"])]
    digest = inputs_digest(rows)
    assert inputs_digest([("prompt a!", ["x", "y"]), rows[1]]) != digest
    assert inputs_digest([("prompt a", ["y", "x"]), rows[1]]) != digest
    assert inputs_digest(rows[::-1]) != digest and inputs_digest(list(rows)) == digest


def test_a_cache_file_of_another_format_or_damaged_is_recomputed(tmp_path):
    samples = [Sample(["h"], ["a", "b"], "a", key=f"train:{i}") for i in range(3)]
    calls = []

    def scorer(model, batch):
        calls.append(len(batch))
        return torch.full((len(batch), 2), -1.0), None

    class Batch(list):
        def to(self, device):
            return self

    import contextlib

    ref = contextlib.nullcontext
    path = tmp_path / "k.safetensors"
    marker = tmp_path / "marker"
    path.write_bytes(crafted_pickle(marker))  # a crafted pickle: never unpickled, a miss
    out = reference_logps(ref, samples, Batch, 2, "cpu", path, progress=False, logprobs=scorer)
    assert calls == [2, 1] and float(out["train:0"][0]) == -1.0 and not marker.exists()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["format"] == str(CACHE_FORMAT)
    cached = read_cache(path)
    assert sorted(cached) == [s.key for s in samples]
    assert all(torch.equal(cached[s.key], torch.tensor([-1.0, -1.0])) for s in samples)
    reference_logps(ref, samples, Batch, 2, "cpu", path, progress=False, logprobs=scorer)
    assert calls == [2, 1]  # now a hit
    path.write_bytes(b"damaged")
    reference_logps(ref, samples, Batch, 2, "cpu", path, progress=False, logprobs=scorer)
    assert calls == [2, 1, 2, 1]
