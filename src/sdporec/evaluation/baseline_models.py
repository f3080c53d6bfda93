"""SASRec and GRU4Rec: item-id sequence models, as baselines for the language models.

Each training sample becomes the sequence history + [target] (left-padded to `max_len`); the model
predicts every next item with a full softmax over the item vocabulary (tied input/output embeddings).
A candidate's score is the dot product of the history's last hidden state with its embedding. Training
stops early on validation HR@1 and keeps the best weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdporec.data.candidates import catalogue, sample_rng
from sdporec.data.samples import Sample
from sdporec.evaluation.catalogue import Catalogue
from sdporec.evaluation.evaluate import evaluate_ranking


@dataclass
class SequentialConfig:
    kind: str = "sasrec"  # "sasrec" or "gru4rec"
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    epochs: int = 30
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 256
    max_len: int = 11  # 10 history items + the target
    seed: int = 0
    progress: bool = True


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SequentialConfig):
        super().__init__()
        self.items = nn.Embedding(n_items, cfg.hidden, padding_idx=0)
        _init_items(self.items)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, cfg.hidden * 2, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = cfg.heads

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item indices, left-padded with 0 -> hidden states (B, L, H)."""
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device)
        x = self.drop(self.items(seq) * self.items.embedding_dim**0.5 + self.positions(pos))
        # Causal, and no real item attends to padding; a padding position attends to itself only, so that
        # no row is left with nothing to attend to.                                     # (B*heads, L, L)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = causal & (seq != 0).unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = torch.zeros(allowed.shape, device=seq.device).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.heads, 0)
        return self.norm(self.encoder(x, mask=mask))


class GRU4Rec(nn.Module):
    def __init__(self, n_items: int, cfg: SequentialConfig):
        super().__init__()
        self.items = nn.Embedding(n_items, cfg.hidden, padding_idx=0)
        _init_items(self.items)
        self.gru = nn.GRU(
            cfg.hidden, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.drop(self.items(seq)))
        return self.drop(out)


def _init_items(emb: nn.Embedding) -> None:
    """Small item embeddings: the output logits are hidden · embedding, and nn.Embedding's N(0, 1) start
    gives logits of size ~hidden and a first loss far above log(n_items)."""
    nn.init.normal_(emb.weight, std=emb.embedding_dim**-0.5)
    with torch.no_grad():
        emb.weight[0].zero_()


def _encode(titles: Sequence[str], index: dict[str, int], length: int) -> list[int]:
    ids = [index.get(t, 0) for t in titles][-length:]
    return [0] * (length - len(ids)) + ids


class SequentialScorer:
    """A trained SASRec or GRU4Rec: an item's score is the dot product of the history's last hidden state with
    the item's embedding, for candidate lists (a call) or the whole catalogue (`catalogue`). An item the model
    has no row for gets the padding row's score, which training pushes down (it is in every softmax, never a
    target)."""

    def __init__(self, model: nn.Module, index: dict[str, int], length: int):
        self.model, self.index, self.length = model, index, length

    def _last(self, samples: Sequence[Sample]) -> torch.Tensor:
        hist = torch.tensor([_encode(s.history, self.index, self.length) for s in samples])
        return self.model(hist)[:, -1]  # (B, H)

    def __call__(self, samples: Sequence[Sample]) -> list[list[float]]:
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(samples), 1024):
                part = samples[start : start + 1024]
                cands = torch.tensor([[self.index.get(c, 0) for c in s.candidates] for s in part])
                out.extend(torch.einsum("bh,bch->bc", self._last(part), self.model.items(cands)).tolist())
        return out

    def catalogue(self, samples: Sequence[Sample], items: Catalogue) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            rows = self.model.items(torch.tensor([self.index.get(t, 0) for t in items.titles]))  # (n, H)
            return self._last(samples) @ rows.T


def train_sequential(
    cfg: SequentialConfig, train: Sequence[Sample], valid: Sequence[Sample], extra_titles: Sequence[Sample] = ()
) -> tuple[SequentialScorer, dict]:
    torch.manual_seed(cfg.seed)
    titles = catalogue(list(train) + list(valid) + list(extra_titles))
    index = {t: i + 1 for i, t in enumerate(titles)}  # 0 is padding
    model = (SASRec if cfg.kind == "sasrec" else GRU4Rec)(len(titles) + 1, cfg)
    seqs = torch.tensor([_encode(s.history + [s.target], index, cfg.max_len) for s in train])  # (N, L)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    score = SequentialScorer(model, index, cfg.max_len - 1)

    best, best_state, stale, history = -1.0, None, 0, []
    started = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = list(range(len(seqs)))
        sample_rng(cfg.seed, "sequential", epoch).shuffle(order)
        total = 0.0
        for start in tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"{cfg.kind} epoch {epoch + 1}",
            disable=not cfg.progress,
            leave=False,
        ):
            batch = seqs[order[start : start + cfg.batch_size]]
            inputs, labels = batch[:, :-1], batch[:, 1:]
            logits = model(inputs) @ model.items.weight.T  # (B, L-1, n_items+1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if not valid:
            history.append({"epoch": epoch + 1, "loss": total / len(seqs)})
            continue
        hr1 = evaluate_ranking(score, valid)[0]["hr@1"]
        history.append({"epoch": epoch + 1, "loss": total / len(seqs), "valid_hr@1": hr1})
        tqdm.write(f"{cfg.kind} epoch {epoch + 1}: loss {total / len(seqs):.4f}, valid hr@1 {hr1:.4f}")
        if hr1 > best:
            best, best_state, stale = hr1, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    info = {
        "epochs_run": len(history),
        "best_valid_hr@1": best if valid else None,
        "train_seconds": round(time.time() - started, 1),
        "history": history,
    }
    return score, info
