"""Reading the paper's LastFM files from ../shared/data (skipped when they are absent)."""

from conftest import shared_file

from sdporec.data.candidates import catalogue
from sdporec.data.samples import read_samples


def test_lastfm_files_read_in_both_history_forms():
    train = read_samples(shared_file("lastfm", "lastfm-train.json"), "train")
    valid = read_samples(shared_file("lastfm", "resampled", "lastfm-val.json"), "valid")
    assert len(train) == 47872 and len(valid) == 2767
    assert all(3 <= len(s.history) <= 10 and len(s.candidates) == 20 for s in train[:2000] + valid)
    assert len(catalogue(train + valid)) <= 4606


def test_builtin_vocabulary_covers_lastfm():
    from sdporec.data.codec import build_builtin_codec
    from sdporec.data.prompts import build_prompt

    valid = read_samples(shared_file("lastfm", "resampled", "lastfm-val.json"), "valid")
    codec = build_builtin_codec(catalogue(valid))
    s = valid[0]
    ids = codec.encode_prompt(build_prompt(s.history, s.candidates))
    assert codec.unk_id not in ids and len(ids) < 100
