"""What the prompt costs a model: rank the candidates of EVAL twice with one SFT checkpoint, in its prompt (the
product: history, candidate list and template words, then the answer's log-prob) and in "history mode" (BOS and
the history's titles only, the next title's log-prob after the last one, as SASRec scores). A model trained with
`sft --history-weight` has learnt both tasks; the gap says how much of what it knows about the next item the
prompt keeps it from using. Text titles: the history readout scores ", " + title after the history, as
`sft --history-weight` labels it.

    .venv/bin/python bench/prompt_cost.py --model RUN/model --data EVAL [--domain music] [--out DIR]

A third mode, "both", ranks by the sum of the two log-probs (`sdporec evaluate --history-readout`); with
--templates a fourth, "templates", by the sum over the domain's prompt templates (training draws one of them per
sample). With --out, each mode's metrics and predictions go to DIR/<mode>, for `sdporec compare`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sdporec.data.prompts import TEMPLATES  # noqa: E402
from sdporec.data.samples import DataError, read_samples  # noqa: E402
from sdporec.evaluation.evaluate import LMScorer, evaluate_ranking, write_results  # noqa: E402
from sdporec.models.logprobs import IGNORE  # noqa: E402


class HistoryScorer:
    """Each candidate's log-prob as the next title after the history alone (the history readout that `sdporec
    evaluate --history-readout` adds to the prompt's)."""

    def __init__(self, scorer: LMScorer):
        self.scorer = scorer

    def __call__(self, samples) -> list[list[float]]:
        codec = self.scorer.codec
        return self.scorer.answer_scores([codec.encode_history(s.history, IGNORE)[0] for s in samples],
                                         [[codec.encode_next_title(c) for c in s.candidates] for s in samples])


class SumScorer:
    """The sum of several scorers' log-probs: "templates", the prompt in each of the domain's templates."""

    def __init__(self, scorers):
        self.scorers = scorers

    def __call__(self, samples) -> list[list[float]]:
        return [[sum(c) for c in zip(*rows)] for rows in zip(*(scorer(samples) for scorer in self.scorers))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--domain", default="music")
    ap.add_argument("--out", default="")
    ap.add_argument("--templates", action="store_true", help="also rank by the sum over the domain's templates")
    args = ap.parse_args()
    from sdporec.models.loading import load_model
    try:
        samples = read_samples(args.data, "eval")   # the keys `sdporec evaluate` gives, for `compare`
        model, codec = load_model(args.model)
    except (DataError, OSError, ValueError) as e:
        sys.exit(f"prompt_cost: {e}")
    prompt = LMScorer(model, codec, args.domain, progress=False)
    scorers = {"history": HistoryScorer(prompt), "prompt": prompt,
               "both": LMScorer(model, codec, args.domain, progress=False, history=True)}
    if args.templates:
        scorers["templates"] = SumScorer([LMScorer(model, codec, args.domain, template=t, progress=False)
                                          for t in range(len(TEMPLATES[args.domain]))])
    for name, scorer in scorers.items():
        metrics, rows = evaluate_ranking(scorer, samples)
        print(f"{name:8s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if args.out:
            write_results(Path(args.out) / name, metrics, rows, {"mode": name, "model": args.model})


if __name__ == "__main__":
    main()
