"""The generation protocol decodes what it is asked to: up to --max-new-tokens, a row ending at its EOS."""

import pytest

from sdporec.data.samples import Sample
from sdporec.evaluation.evaluate import evaluate_generation


def samples(titles, n=3):
    return [Sample(history=titles[i:i + 3], candidates=titles[10:30], target=titles[10 + i], key=f"s{i}")
            for i in range(n)]


@pytest.mark.parametrize("budget", [3, 11])
def test_generation_decodes_its_whole_budget_when_no_eos_comes(tiny_llama, budget):
    model, codec = tiny_llama
    model.generation_config.suppress_tokens = [codec.eos_id]   # this model never ends an answer
    lengths = []
    generate = model.generate

    def spy(**kw):
        out = generate(**kw)
        lengths.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    model.generate = spy
    try:
        evaluate_generation(model, codec, samples([f"Artist {i}" for i in range(40)]), "music", 2,
                            max_new_tokens=budget, progress=False)
    finally:
        del model.generate
        model.generation_config.suppress_tokens = None
    # No shorter cap (such as the longest candidate + a few tokens): a second title decoded later can make
    # an answer invalid, so every token of the budget is decoded.
    assert lengths == [budget, budget]

