"""RecBole's SASRec (recbole==1.2.1, the `recbole` bench extra, never a dependency of sdporec) trained on exactly
the sequences `sdporec baseline sasrec` trains on and scored on the same test samples in both protocols: a
reference check of our ID baseline. It runs in a virtualenv of its own:

    python3 -m venv .venv-recbole
    .venv-recbole/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "pandas<3"
    .venv-recbole/bin/pip install -e . --no-deps
    .venv-recbole/bin/python bench/recbole_sasrec.py --train TRAIN.jsonl --valid VALID.jsonl --eval TEST.jsonl
        --catalogue items.txt --out OUT [--epochs 20 --patience 3 --hidden 128 --layers 3 --heads 2 --dropout 0.5
        --lr 1e-3 --batch-size 256 --max-len 50 --seed 0 --threads 2]
    .venv/bin/sdporec compare OUT/list SASREC_LIST_EVAL      # OUT/all against a `--candidates all` evaluation

OUT/list ranks each sample's candidate list, OUT/all every title of the catalogue (default: every title of the
samples) but the history; each gets metrics.json and predictions.jsonl written by sdporec itself (its ranks, ties,
metrics and file format), whole or not at all. OUT/recbole_data holds RecBole's atomic files.

Data: training sample i is RecBole user i, whose interactions are its history then its target, cut as ours cuts
them (the last 11 items) and ordered by timestamps 0, 1, ...; RecBole's augmentation then trains on every prefix ->
next item of every sample, the pairs our SASRec's loss covers at its positions. RecBole's split keeps all of them
for training ({'RS': [1.0]}): its own leave-one-out would take each sample's target out. A history is scored from
its last 10 titles, as ours is; --max-len (RecBole's MAX_ITEM_LIST_LENGTH) only pads unless it is below 10, so
--max-len 10 trains on the same pairs about 5 times faster on CPU. A RecBole batch is --batch-size pairs, where
ours is --batch-size sequences of up to 10 pairs (MovieLens: 9.7 on average), so RecBole takes ~10x the steps.

Training: RecBole's Trainer.fit (Adam, its CE loss over every item, RecBole's default for SASRec) with RecBole's
early stopping, validated on VALID's HR@1 over its candidate lists, the criterion ours stops on (stopping_step =
patience - 1, so it stops after `patience` epochs without a better score; RecBole counts a tie as better), keeping
the best epoch's weights. We validate on VALID rather than RecBole's own split, which would hold training pairs
out; without --valid it trains --epochs epochs. The model is RecBole's own (post-norm, GELU, N(0, 0.02) init) with
these settings, its feed-forward size 2 x hidden as ours, both its dropouts --dropout.

Scoring: RecBole's full_sort_predict on the history's item ids. A title RecBole never saw in training scores 1
below the sample's lowest item (the lowest score); one in a history is left out of it (none left: every item 0).

RecBole 1.2.1 against today's packages: its Config sets np.float_ and others that numpy 2 removed, so the venv pins
numpy<2, and pandas<3 with it, as a precaution (RecBole predates pandas 3's copy-on-write). Its Trainer writes
TensorBoard logs under the working directory (dropped here) and checkpoints by torch.save of its Config, which
torch.load's weights_only default refuses (the best weights are kept in memory instead). Its Config reads
`--key=value` arguments from sys.argv, which is cleared first.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sdporec.data.samples import read_samples  # noqa: E402
from sdporec.errors import DataError, OutputError, require  # noqa: E402
from sdporec.evaluation.baseline_models import SequentialConfig  # noqa: E402
from sdporec.evaluation.catalogue import Catalogue, evaluate_catalogue  # noqa: E402
from sdporec.evaluation.evaluate import write_results  # noqa: E402
from sdporec.evaluation.scoring import ranking_results  # noqa: E402
from sdporec.outputs import require_apart  # noqa: E402

DATASET = "sdporec"  # RecBole's dataset name: OUT/recbole_data/sdporec/sdporec.inter
WINDOW = SequentialConfig().max_len  # the items of a training sequence ours keeps (history + target)
BATCH = 1024  # samples scored at once


def write_atomic(train: list, folder: Path) -> dict[str, str]:
    """The training samples as RecBole's .inter file; title -> item token. Tokens are numbers: titles hold spaces,
    commas and quotes, which RecBole's tab-separated reader does not take as they are."""
    tokens: dict[str, str] = {}
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, s in enumerate(train):
        for t, title in enumerate((s.history + [s.target])[-WINDOW:]):
            lines.append(f"{user}\t{tokens.setdefault(title, str(len(tokens) + 1))}\t{t}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DATASET}.inter").write_text("\n".join(lines) + "\n")
    return tokens


class RecBoleScorer:
    """A RecBole SASRec as sdporec's scorers: candidate lists (a call) and the catalogue (`catalogue`)."""

    def __init__(self, model, dataset, tokens: dict[str, str], device):
        self.model, self.device = model, device
        self.ids = {title: int(dataset.token2id(dataset.iid_field, tok)) for title, tok in tokens.items()}
        self.length = min(model.max_seq_length, WINDOW - 1)

    def full(self, samples: list) -> torch.Tensor:
        """RecBole's full_sort_predict for each sample's history: (samples, RecBole's items), column 0 padding."""
        from recbole.data.interaction import Interaction

        hist = [[self.ids[t] for t in s.history if t in self.ids][-self.length :] for s in samples]
        seq = torch.zeros(len(samples), self.model.max_seq_length, dtype=torch.long)
        for row, ids in zip(seq, hist):
            row[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        lens = torch.tensor([max(len(ids), 1) for ids in hist])
        self.model.eval()
        with torch.no_grad():
            inter = Interaction({self.model.ITEM_SEQ: seq, self.model.ITEM_SEQ_LEN: lens}).to(self.device)
            scores = self.model.full_sort_predict(inter).float().cpu()
        scores[torch.tensor([not ids for ids in hist])] = 0.0
        return scores

    def _pick(self, scores: torch.Tensor, titles: list[str]) -> torch.Tensor:
        """`scores` (samples, items) at `titles`; a title RecBole never saw 1 below the row's lowest item."""
        cols = torch.tensor([self.ids.get(t, -1) for t in titles]).expand(len(scores), -1)
        out = scores.gather(1, cols.clamp(min=0))
        floor = scores[:, 1:].min(dim=1, keepdim=True).values - 1
        return torch.where(cols < 0, floor.expand_as(out), out)

    def __call__(self, samples: list) -> list[list[float]]:
        out = []
        for start in range(0, len(samples), BATCH):
            part = samples[start : start + BATCH]
            for s, row in zip(part, self.full(part)):
                out.append(self._pick(row[None], s.candidates)[0].tolist())
        return out

    def catalogue(self, samples: list, items: Catalogue) -> torch.Tensor:
        return self._pick(self.full(samples), items.titles)


class _NoBoard:
    """Stands in for RecBole's TensorBoard writer, which would write under the working directory."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def recbole_data(args, root: Path):
    """RecBole's config, its dataset of the atomic files under `root`, all of it built for training, and its loader."""
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.data.utils import get_dataloader
    from recbole.utils import init_seed

    sys.argv[1:] = []  # RecBole's Config would read --key=value arguments as its own settings
    warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")  # pandas' and torch's deprecations
    settings = {
        "data_path": str(root),
        "checkpoint_dir": str(root),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "eval_args": {"split": {"RS": [1.0]}, "group_by": "none", "order": "TO", "mode": "full"},
        "hidden_size": args.hidden,
        "inner_size": 2 * args.hidden,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "epochs": args.epochs,
        "stopping_step": args.patience - 1,
        "eval_step": 1,
        "learning_rate": args.lr,
        "train_batch_size": args.batch_size,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
    }
    config = Config(model="SASRec", dataset=DATASET, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    built = create_dataset(config).build()[0]
    return config, built, get_dataloader(config, "train")(config, built, None, shuffle=True)


def make_trainer(config, model, scorer: RecBoleScorer):
    """RecBole's Trainer, validating on samples' HR@1 over their candidate lists, its checkpoints kept in memory."""
    import recbole.trainer.trainer as trainer_module

    trainer_module.get_tensorboard = lambda logger: _NoBoard()

    class CandidateTrainer(trainer_module.Trainer):
        losses: list[float] = []
        valid_hr1: list[float] = []
        best_state, best_epoch = None, None

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            total = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
            self.losses = self.losses + [total / len(train_data)]
            print(f"epoch {epoch_idx + 1}: loss {self.losses[-1]:.4f}", flush=True)
            return total

        def _valid_epoch(self, valid_data, show_progress=False):
            hr1 = ranking_results(valid_data, scorer(valid_data))[0]["hr@1"]
            self.valid_hr1 = self.valid_hr1 + [hr1]
            print(f"epoch {len(self.losses)}: valid hr@1 {hr1:.4f}", flush=True)
            return hr1, {"hr@1": hr1}

        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            self.best_state, self.best_epoch = copy.deepcopy(self.model.state_dict()), epoch + 1

    return CandidateTrainer(config, model)


def train_recbole(args, root: Path, tokens: dict[str, str], valid: list) -> tuple[RecBoleScorer, dict]:
    import recbole
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import init_seed

    config, built, loader = recbole_data(args, root)
    init_seed(config["seed"], config["reproducibility"])  # as RecBole's run_recbole seeds the model
    model = SASRec(config, built).to(config["device"])
    scorer = RecBoleScorer(model, built, tokens, config["device"])
    trainer = make_trainer(config, model, scorer)
    started = time.time()
    trainer.fit(loader, valid, verbose=False, saved=True, show_progress=False)
    model.load_state_dict(trainer.best_state)
    history = [{"epoch": i + 1, "loss": round(loss, 6)} for i, loss in enumerate(trainer.losses)]
    for row, hr1 in zip(history, trainer.valid_hr1):
        row["valid_hr@1"] = hr1
    info = {
        "recbole": recbole.__version__,
        "training_pairs": len(built),
        "items_seen": len(tokens),
        "epochs_run": len(history),
        "best_epoch": trainer.best_epoch,
        "best_valid_hr@1": max(trainer.valid_hr1) if valid else None,
        "train_seconds": round(time.time() - started, 1),
        "history": history,
    }
    return scorer, info


def run(args) -> None:
    import recbole  # noqa: F401  (missing in sdporec's own venv: say so before anything is read or written)

    started = time.time()
    torch.set_num_threads(args.threads)
    for name in ("epochs", "patience", "hidden", "layers", "heads", "batch_size", "max_len", "threads"):
        require(getattr(args, name) >= 1, name.replace("_", "-"), "must be at least 1")
    require(args.hidden % args.heads == 0, "hidden", "must be a multiple of heads")
    require(0 <= args.dropout < 1, "dropout", "must be in [0, 1)")
    paths = {name: getattr(args, name) for name in ("train", "valid", "eval", "catalogue")}
    require_apart(args.out, paths)
    train, samples = read_samples(args.train, "train"), read_samples(args.eval, "eval")
    valid = read_samples(args.valid, "valid") if args.valid else []
    items = Catalogue.read(args.catalogue) if args.catalogue else Catalogue.of_samples(train, valid, samples)
    items.require_known(samples, args.eval)
    out = Path(args.out)
    tokens = write_atomic(train, out / "recbole_data" / DATASET)
    scorer, info = train_recbole(args, out / "recbole_data", tokens, valid)
    head = {"protocol": "ranking", "model": "recbole-sasrec", "data": args.eval}
    metrics, rows = ranking_results(samples, scorer(samples))
    write_results(out / "list", metrics, rows, {**head, "seconds": round(time.time() - started, 1), **info})
    print(f"{out / 'list'}: hr@1 {metrics['hr@1']:.4f}, ndcg@10 {metrics['ndcg@10']:.4f}")
    metrics, rows = evaluate_catalogue(scorer.catalogue, samples, items, seed=args.seed)
    extra = {**head, "candidates": "all", "catalogue": len(items), "seconds": round(time.time() - started, 1)}
    write_results(out / "all", metrics, rows, {**extra, **info})
    print(f"{out / 'all'}: hr@10 {metrics['hr@10']:.4f}, ndcg@10 {metrics['ndcg@10']:.4f}, mrr {metrics['mrr']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training samples (what `sdporec baseline sasrec` trains on)")
    ap.add_argument("--valid", default="", help="validation samples for early stopping (default: fixed epochs)")
    ap.add_argument("--eval", required=True, help="samples to evaluate")
    ap.add_argument("--catalogue", default="", help="prepare's items.txt (default: every title of the samples)")
    ap.add_argument("--out", required=True, help="OUT/list, OUT/all and OUT/recbole_data")
    ap.add_argument("--epochs", type=int, default=20, help="most epochs")
    ap.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better HR@1")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50, help="RecBole's MAX_ITEM_LIST_LENGTH")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    try:
        run(args)
    except ImportError as e:
        sys.exit(f"recbole_sasrec: {e} (run it with .venv-recbole/bin/python: see the head of this file)")
    except (DataError, OutputError, OSError, ValueError) as e:
        sys.exit(f"recbole_sasrec: {e}")


if __name__ == "__main__":
    main()
