"""Ranking the whole catalogue (evaluation/catalogue.py): the target's rank against hand values, ties drawn
fairly, the history left out, every baseline's catalogue scores equal to the same items scored as a candidate
list, and `sdporec baseline --candidates all` (and `both`) end to end with its bad inputs."""

import json
import random

import pytest
import torch

from sdporec.cli import main
from sdporec.data.samples import Sample, write_samples
from sdporec.errors import DataError
from sdporec.evaluation.baselines import ItemCounts, ItemKNN, Popularity
from sdporec.evaluation.catalogue import Catalogue, catalogue_results, evaluate_catalogue, target_rank
from sdporec.evaluation.metrics import CATALOGUE_KEYS, NonFiniteError, ranking_metrics
from sdporec.runs import METRICS, PREDICTIONS, read_evaluation_metrics

TITLES = [f"i{n}" for n in range(12)]


def _train() -> list[Sample]:
    rng = random.Random(3)
    out = []
    for n in range(60):
        seq = rng.sample(TITLES[:10], 5)  # i10 and i11 never in training: cold
        out.append(Sample(seq[:4], [seq[4], *rng.sample([t for t in TITLES if t not in seq], 3)], seq[4], key=f"t{n}"))
    return out


def test_the_target_rank_counts_items_above_it_outside_the_history():
    scores = torch.tensor([3.0, 1.0, 2.0, 5.0, 0.0])
    assert target_rank(scores, 1, [], random.Random(0)) == 3  # 3.0, 2.0, 5.0 above
    assert target_rank(scores, 1, [0, 3], random.Random(0)) == 1  # the history's 3.0 and 5.0 left out
    assert target_rank(scores, 3, [3], random.Random(0)) == 0  # the target itself is never left out


def test_ties_are_drawn_uniformly_so_a_constant_scorer_gets_no_credit():
    scores = torch.zeros(11)
    ranks = [target_rank(scores, 4, [0, 1], random.Random(n)) for n in range(4000)]
    assert set(ranks) == set(range(9))  # the 8 other ranked items: ranks 0..8, each possible
    assert abs(sum(ranks) / len(ranks) - 4.0) < 0.15  # an uninformed guess's mean rank
    mixed = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    assert {target_rank(mixed, 2, [], random.Random(n)) for n in range(200)} == {0, 1, 2}


def test_catalogue_metrics_against_hand_values():
    m = ranking_metrics([0, 4, 9, 19, 25], CATALOGUE_KEYS)
    assert (m["hr@1"], m["hr@5"], m["hr@10"], m["hr@20"]) == (0.2, 0.4, 0.6, 0.8)
    # 1 / log2(rank + 2) for ranks 0, 4, 9, 19; rank 25 is past every cut-off
    gains = [1.0, 1 / 2.584962500721156, 1 / 3.4594316186372973, 1 / 4.392317422778761, 0.0]
    assert m["ndcg@5"] == pytest.approx(sum(gains[:2]) / 5)
    assert m["ndcg@10"] == pytest.approx(sum(gains[:3]) / 5)
    assert m["ndcg@20"] == pytest.approx(sum(gains[:4]) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 10 + 1 / 20 + 1 / 26) / 5)
    assert set(m) == {*CATALOGUE_KEYS, "valid_ratio", "n"}


def test_rows_leave_the_history_out_and_keep_the_best_twenty():
    items = Catalogue([f"c{n}" for n in range(30)])
    sample = Sample(["c29", "c28", "c5"], ["c5", "c1"], "c5", key="eval:0")  # came back to c5
    scores = torch.arange(30, dtype=torch.float32).unsqueeze(0)  # c29 best, then c28, ...
    metrics, rows = catalogue_results([sample], scores, items)
    row = rows[0]
    assert row["catalogue"] == 28 and row["rank"] == 22  # c6..c27 above c5; c28, c29 not ranked
    assert [t for t, _ in row["ranked"]] == [f"c{n}" for n in range(27, 7, -1)]
    assert metrics["hr@20"] == 0.0 and metrics["mrr"] == pytest.approx(1 / 23)
    with pytest.raises(NonFiniteError, match="eval:0.*'c3' has score nan"):
        catalogue_results([sample], scores.index_fill(1, torch.tensor([3]), float("nan")), items)


@pytest.mark.parametrize("make", [Popularity, ItemCounts, ItemKNN])
def test_catalogue_scores_equal_the_same_items_scored_as_a_candidate_list(make):
    train = _train()
    scorer, items = make(train), Catalogue(TITLES)
    asked = [Sample(["i1", "i2", "i3"], ["i4", "i0"], "i4"), Sample(["i9", "i10"], ["i11", "i0"], "i11")]
    whole = scorer.catalogue(asked, items)
    one_by_one = scorer([Sample(s.history, TITLES, s.target) for s in asked])
    assert whole.shape == (2, len(TITLES))
    torch.testing.assert_close(whole, torch.tensor(one_by_one, dtype=whole.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_sequential_models_score_the_catalogue_as_they_score_candidates(kind):
    from sdporec.evaluation.baseline_models import SequentialConfig, train_sequential

    cfg = SequentialConfig(kind=kind, hidden=16, layers=1, epochs=1, progress=False, batch_size=16)
    scorer, _ = train_sequential(cfg, _train(), [])
    items = Catalogue([*TITLES, "never seen"])
    asked = [Sample(["i1", "i2", "i3"], ["i4", "i0"], "i4"), Sample(["i9"], ["i11", "i0"], "i11")]
    whole = scorer.catalogue(asked, items)
    one_by_one = torch.tensor(scorer([Sample(s.history, items.titles, s.target) for s in asked]))
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-5)
    padding = scorer._last(asked) @ scorer.model.items.weight[0]
    torch.testing.assert_close(whole[:, -1], padding)  # no row of its own: the padding row's score


def test_evaluate_catalogue_in_batches_equals_one_batch():
    train, items = _train(), Catalogue(TITLES)
    asked = [Sample(s.history, s.candidates, s.target, key=f"e{n}") for n, s in enumerate(_train()[:25])]
    scorer = ItemCounts(train)
    assert evaluate_catalogue(scorer.catalogue, asked, items, batch=4) == evaluate_catalogue(
        scorer.catalogue, asked, items, batch=100
    )


def test_an_unknown_title_is_named_with_its_file_and_row(tmp_path):
    items = Catalogue(TITLES, "items.txt")
    with pytest.raises(DataError, match=r"file t.jsonl, row 7, field 'historyList': title 'zz' is not in"):
        items.require_known([Sample(["i1", "zz"], ["i2"], "i2", row=7)], "t.jsonl")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="holds no titles"):
        Catalogue.read(tmp_path / "empty.txt")


def _files(tmp_path):
    write_samples(tmp_path / "train.jsonl", _train())
    test = [Sample(s.history, s.candidates, s.target, key=f"e{n}") for n, s in enumerate(_train()[:20])]
    write_samples(tmp_path / "test.jsonl", test)
    (tmp_path / "items.txt").write_text("\n".join(TITLES) + "\n")
    return tmp_path / "train.jsonl", tmp_path / "test.jsonl"


def test_baseline_ranks_the_catalogue_end_to_end_and_compares(tmp_path, capsys):
    train, test = _files(tmp_path)
    for name in ("popularity", "item-counts"):
        args = ["baseline", name, "--train", str(train), "--eval", str(test), "--candidates", "all"]
        assert main([*args, "--catalogue", str(tmp_path / "items.txt"), "--out", str(tmp_path / name)]) == 0
    metrics = read_evaluation_metrics(tmp_path / "popularity")
    assert metrics["candidates"] == "all" and metrics["catalogue"] == 12 and set(CATALOGUE_KEYS) <= set(metrics)
    row = json.loads((tmp_path / "popularity" / PREDICTIONS).read_text().splitlines()[0])
    assert row["catalogue"] == 12 - 4 and len(row["ranked"]) == 8
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "item-counts"), str(tmp_path / "popularity")]) == 0
    assert "hr@20" in capsys.readouterr().out
    assert (
        main(["baseline", "popularity", "--train", str(train), "--eval", str(test), "--out", str(tmp_path / "l")]) == 0
    )
    assert main(["compare", str(tmp_path / "l"), str(tmp_path / "popularity")]) == 2
    assert "ranks the whole catalogue" in capsys.readouterr().err


def test_bad_catalogue_settings_are_one_line_and_write_nothing(tmp_path, capsys):
    train, test = _files(tmp_path)
    (tmp_path / "short.txt").write_text("\n".join(TITLES[:5]) + "\n")
    base = ["baseline", "popularity", "--train", str(train), "--eval", str(test), "--out", str(tmp_path / "o")]
    assert main([*base, "--candidates", "all", "--catalogue", str(tmp_path / "short.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test.jsonl" in err[0] and "is not in the catalogue" in err[0], err
    assert main([*base, "--catalogue", str(tmp_path / "items.txt")]) == 2
    assert "--candidates all" in capsys.readouterr().err
    assert not (tmp_path / "o" / METRICS).exists()


def test_baseline_candidates_both_trains_once_and_writes_what_each_protocol_alone_writes(tmp_path, capsys, monkeypatch):
    """SASRec trained once, then the lists and the catalogue, in OUT/list and OUT/all: each the same predictions as
    a run of that protocol alone with the same seed; a run of either kind in OUT is replaced only with --overwrite,
    and leaves none of the other kind's outputs behind."""
    train, test = _files(tmp_path)
    base = ["baseline", "sasrec", "--train", str(train), "--eval", str(test), "--hidden", "8", "--layers", "1"]
    base += ["--epochs", "2", "--no-progress"]
    cat = ["--catalogue", str(tmp_path / "items.txt")]
    import sdporec.evaluation.baseline_models as models

    trained = []
    train_sequential = models.train_sequential
    monkeypatch.setattr(models, "train_sequential", lambda *a, **k: trained.append(1) or train_sequential(*a, **k))
    assert main([*base, *cat, "--candidates", "both", "--out", str(tmp_path / "both")]) == 0
    assert trained == [1]
    assert main([*base, "--out", str(tmp_path / "list")]) == 0
    assert main([*base, *cat, "--candidates", "all", "--out", str(tmp_path / "all")]) == 0
    for name in ("list", "all"):
        got, alone = tmp_path / "both" / name, tmp_path / name
        assert (got / PREDICTIONS).read_text() == (alone / PREDICTIONS).read_text()
        drop = ("seconds", "train_seconds")
        assert {k: v for k, v in read_evaluation_metrics(got).items() if k not in drop} == {
            k: v for k, v in read_evaluation_metrics(alone).items() if k not in drop
        }
    assert read_evaluation_metrics(tmp_path / "both" / "all")["candidates"] == "all"
    assert not (tmp_path / "both" / METRICS).exists() and (tmp_path / "both" / "config.yaml").is_file()
    capsys.readouterr()
    assert main([*base, *cat, "--candidates", "all", "--out", str(tmp_path / "both")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "both" / "list").is_dir()
    assert main([*base, *cat, "--candidates", "all", "--out", str(tmp_path / "both"), "--overwrite"]) == 0
    assert (tmp_path / "both" / METRICS).is_file() and not (tmp_path / "both" / "list").exists()
