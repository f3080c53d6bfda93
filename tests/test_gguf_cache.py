"""The cache of converted GGUF files (models/sources.py): where it is, when a file gets a new entry, that an
entry is whole or absent, and that a second load reads the entry instead of the GGUF file and gives the same
model and tokenizer. A tiny Llama stands in for the conversion; tests/test_real_model.py checks SmolLM2's."""

import copy
import os
from pathlib import Path

import pytest
import torch

from sdporec.models import sources


@pytest.fixture()
def fake_gguf(tmp_path):
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF not read: the conversion is replaced in these tests")
    return path


def test_the_cache_root_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.gguf_cache_root() == tmp_path / "xdg" / "sdporec"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.gguf_cache_root() == tmp_path / "home" / ".cache" / "sdporec"
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "mine"))
    assert sources.gguf_cache_root() == tmp_path / "mine"
    for off in ("", "off", " OFF "):
        monkeypatch.setenv(sources.CACHE_ENV, off)
        assert sources.gguf_cache_root() is None and sources.gguf_cache_dir(tmp_path, "tokenizer") is None


def test_a_rewritten_file_another_dtype_or_another_file_gets_its_own_entry(fake_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    first = sources.gguf_cache_dir(fake_gguf, "model-float32")
    assert first.parent == tmp_path / "cache" / "gguf" and first.name.startswith("tiny.model-float32.")
    assert sources.gguf_cache_dir(fake_gguf, "model-float32") == first  # stable
    assert sources.gguf_cache_dir(fake_gguf, "model-bfloat16") != first
    assert sources.gguf_cache_dir(fake_gguf, "tokenizer") != first
    stat = fake_gguf.stat()
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten in place
    assert sources.gguf_cache_dir(fake_gguf, "model-float32") != first
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sources.gguf_cache_dir(fake_gguf, "model-float32") == first
    fake_gguf.write_bytes(fake_gguf.read_bytes() + b"!")  # another size
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sources.gguf_cache_dir(fake_gguf, "model-float32") != first
    twin = tmp_path / "elsewhere" / "tiny.gguf"  # same name, same bytes
    twin.parent.mkdir()
    twin.write_bytes(fake_gguf.read_bytes())
    os.utime(twin, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sources.gguf_cache_dir(twin, "model-float32") != sources.gguf_cache_dir(fake_gguf, "model-float32")


def test_an_entry_is_whole_or_absent_and_a_failed_write_only_warns(tmp_path, capsys):
    target = tmp_path / "cache" / "gguf" / "entry"

    def save(directory):
        Path(directory, "a").write_text("half")
        raise OSError(28, "No space left on device")

    sources.store_converted(target, save)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and sources.CACHE_ENV in err
    assert list(target.parent.iterdir()) == []  # no partial entry

    sources.store_converted(target, lambda d: Path(d, "a").write_text("whole"))
    assert [p.name for p in target.parent.iterdir()] == ["entry"] and (target / "a").read_text() == "whole"
    sources.store_converted(target, lambda d: pytest.fail("an existing entry was written again"))
    sources.store_converted(None, lambda d: pytest.fail("no cache, nothing written"))

    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache's folder should be")
    sources.store_converted(blocked / "gguf" / "entry", lambda d: pytest.fail("written under a file"))
    assert "was not cached" in capsys.readouterr().err


def test_a_second_load_reads_the_cache_and_gives_the_same_model_and_tokenizer(fake_gguf, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from sdporec.models.families import build_family

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    model, tokenizer = build_family(
        "llama", ["a tiny vocabulary of words", "and a few more"], 32, 1, 2, seed=0, vocab_size=300
    )
    conversions = []

    def convert(path, dtype):
        conversions.append((path, dtype))
        return copy.deepcopy(model).to(dtype)

    monkeypatch.setattr(sources, "dequantised_gguf_model", convert)
    first = sources.load_gguf_model(fake_gguf, torch.float32)
    second = sources.load_gguf_model(str(fake_gguf), torch.float32)
    assert conversions == [(fake_gguf, torch.float32)]
    assert second is not first and second.name_or_path == first.name_or_path == str(fake_gguf)
    assert second.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(), model.state_dict().values()))
    assert next(sources.load_gguf_model(fake_gguf, torch.bfloat16).parameters()).dtype == torch.bfloat16
    assert len(conversions) == 2  # another dtype

    plain = AutoTokenizer.from_pretrained
    read = []

    def from_pretrained(name, *args, gguf_file=None, **kwargs):
        if gguf_file is not None:
            read.append(gguf_file)
            return tokenizer
        return plain(name, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", from_pretrained)
    assert sources.load_gguf_tokenizer(fake_gguf) is tokenizer
    again = sources.load_gguf_tokenizer(fake_gguf)
    assert read == ["tiny.gguf"] and again is not tokenizer
    assert again.get_vocab() == tokenizer.get_vocab()
    text = "a tiny vocabulary, and more words"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_entry_warns_once_and_is_converted_again(fake_gguf, tmp_path, monkeypatch, capsys, damage):
    from sdporec.models.families import build_family

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    model, _ = build_family("llama", ["a tiny vocabulary of words"], 32, 1, 2, seed=0, vocab_size=300)
    conversions = []
    monkeypatch.setattr(
        sources, "dequantised_gguf_model", lambda path, dtype: conversions.append(path) or copy.deepcopy(model)
    )
    sources.load_gguf_model(fake_gguf, torch.float32)
    weights = sources.gguf_cache_dir(fake_gguf, "model-float32") / "model.safetensors"
    if damage == "delete":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    again = sources.load_gguf_model(fake_gguf, torch.float32)
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sdporec:")]
    assert len(warned) == 1 and "could not be read" in warned[0] and f"converting {fake_gguf} again" in warned[0]
    assert len(conversions) == 2 and weights.is_file()  # converted and stored again
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    sources.load_gguf_model(fake_gguf, torch.float32)
    assert len(conversions) == 2 and "sdporec:" not in capsys.readouterr().err  # the new entry is read
