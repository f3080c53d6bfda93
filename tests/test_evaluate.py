"""The generation protocol decodes what it is asked to: up to --max-new-tokens, a row ending at its EOS."""

import pytest

from sdporec.data.samples import Sample
from sdporec.evaluation.evaluate import evaluate_generation


def samples(titles, n=3):
    return [
        Sample(history=titles[i : i + 3], candidates=titles[10:30], target=titles[10 + i], key=f"s{i}")
        for i in range(n)
    ]


@pytest.mark.parametrize("budget", [3, 11])
def test_generation_decodes_its_whole_budget_when_no_eos_comes(tiny_llama, budget):
    model, codec = tiny_llama
    model.generation_config.suppress_tokens = [codec.eos_id]  # this model never ends an answer
    lengths = []
    generate = model.generate

    def spy(**kw):
        out = generate(**kw)
        lengths.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    model.generate = spy
    try:
        evaluate_generation(
            model, codec, samples([f"Artist {i}" for i in range(40)]), "music", 2, max_new_tokens=budget, progress=False
        )
    finally:
        del model.generate
        model.generation_config.suppress_tokens = None
    # No shorter cap (such as the longest candidate + a few tokens): a second title decoded later can make
    # an answer invalid, so every token of the budget is decoded.
    assert lengths == [budget, budget]


def test_history_readout_mixes_in_each_candidate_s_log_prob_after_the_history_alone(tiny_llama):
    from conftest import history_readout_reference

    from sdporec.evaluation.scoring import LMScorer

    model, codec = tiny_llama
    rows = samples([f"Artist {i}" for i in range(40)])
    prompt = LMScorer(model, codec, "music", batch_size=2, progress=False)(rows)
    mixed = LMScorer(model, codec, "music", batch_size=2, progress=False, history_readout=0.25)(rows)
    alone = LMScorer(model, codec, "music", batch_size=2, progress=False, history_readout=1.0)(rows)
    for s, p, m, h in zip(rows, prompt, mixed, alone):
        reference = history_readout_reference(model, codec, s)
        assert h == pytest.approx(reference, abs=1e-4)
        assert m == pytest.approx([0.75 * x + 0.25 * y for x, y in zip(p, reference)], abs=1e-4)


def test_readout_rows_rank_each_sample_as_a_scorer_at_each_weight_does(tiny_llama):
    from sdporec.evaluation.evaluate import evaluate_ranking
    from sdporec.evaluation.metrics import ranking_metrics
    from sdporec.evaluation.scoring import LMScorer, readout_metrics, readout_rows

    model, codec = tiny_llama
    rows = samples([f"Artist {i}" for i in range(40)], n=6)
    weights = [0.0, 0.3, 1.0]
    metrics, found = readout_rows(LMScorer(model, codec, "music", batch_size=4, progress=False), rows, weights)
    for i, w in enumerate(weights):
        _, alone = evaluate_ranking(
            LMScorer(model, codec, "music", batch_size=4, progress=False, history_readout=w), rows
        )
        assert [r["ranks"][i] for r in found] == [r["rank"] for r in alone]
    assert [r["rank"] for r in found] == [r["ranks"][0] for r in found]
    by_weight = readout_metrics(found, weights)
    assert list(by_weight) == weights and by_weight[0.0] == metrics
    assert by_weight[1.0] == ranking_metrics([r["ranks"][2] for r in found])
    # The two readouts differ on this untrained model, so the test could tell weights apart.
    assert [r["ranks"][0] for r in found] != [r["ranks"][2] for r in found]
