"""What the prompt costs a model, and which readout to rank with. One checkpoint scores every candidate of EVAL in
its prompt (the product: history, candidate list and template words, then the answer's log-prob) and in "history
mode" (BOS and the history's titles only, the candidate's log-prob as the next title, as SASRec scores). A model
trained with `sft --history-weight` has learnt both; the gap says how much of what it knows about the next item
the prompt keeps it from using. Candidates are then ranked by (1 - λ) x prompt + λ x history for each λ of
--weights, as `sdporec evaluate --history-readout λ` does (0: the prompt alone, 0.5: the product of the two
probabilities, 1: the history alone). With --select-on VALID (held-out training rows), λ is chosen where VALID's
HR@1 is highest (the smaller λ on ties), never on EVAL.

    .venv/bin/python bench/prompt_cost.py --model RUN/model --data EVAL [--select-on VALID] [--domain music]
        [--weights 0 0.25 0.5 0.75 1] [--out DIR]

With --out, each λ's metrics and predictions go to DIR/w<λ> (for `sdporec compare`), the choice to
DIR/selection.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sdporec.data.samples import read_samples
from sdporec.errors import DataError
from sdporec.evaluation.evaluate import write_results  # noqa: E402
from sdporec.evaluation.scoring import LMScorer, mix_readouts, ranking_results  # noqa: E402

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0]


def readouts(scorer: LMScorer, path: str) -> tuple[list, list, list]:
    """A file's samples (keys as `sdporec evaluate` gives them), and the prompt's and the history's scores."""
    samples = read_samples(path, "eval")
    return samples, scorer.prompt_scores(samples), scorer.history_scores(samples)


def sweep(model_dir: str, data: str, select_on: str, domain: str, weights: list[float], out: str) -> dict:
    """Every λ of `weights` on `data` (and on `select_on`, where given, with the λ chosen there); printed, and
    written under `out` where given. -> the selection record (selection.json)."""
    from sdporec.models.checkpoints import Checkpoint
    from sdporec.models.loading import load_model

    model, codec = load_model(model_dir)
    task = Checkpoint.read(model_dir).task(None)  # a next-item checkpoint's prompt shows no list
    scorer = LMScorer(model, codec, domain, progress=False, task=task)
    measured = readouts(scorer, data)
    chosen_on = readouts(scorer, select_on) if select_on else None
    selection = {"model": model_dir, "data": data, "select_on": select_on or None, "weights": {}}
    for w in sorted(weights):
        row = {}
        if chosen_on:
            row["select_on_hr@1"] = ranking_results(chosen_on[0], mix_readouts(*chosen_on[1:], w))[0]["hr@1"]
        metrics, rows = ranking_results(measured[0], mix_readouts(*measured[1:], w))
        row.update({k: metrics[k] for k in ("hr@1", "ndcg@5", "mrr")})
        selection["weights"][f"{w:g}"] = row
        print(f"λ {w:<5g} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
        if out:
            write_results(Path(out) / f"w{w:g}", metrics, rows, {"history_readout": w, "model": model_dir})
    if chosen_on:
        best = max(selection["weights"], key=lambda w: (selection["weights"][w]["select_on_hr@1"], -float(w)))
        selection["chosen"] = best
        print(f"chosen on {select_on}: λ {best}, HR@1 on {data} {selection['weights'][best]['hr@1']:.4f}")
    if out:
        (Path(out) / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")
    return selection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--select-on", default="", help="held-out training rows on which λ is chosen")
    ap.add_argument("--domain", default="music")
    ap.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    try:
        sweep(args.model, args.data, args.select_on, args.domain, args.weights, args.out)
    except (DataError, OSError, ValueError) as e:
        sys.exit(f"prompt_cost: {e}")


if __name__ == "__main__":
    main()
