"""A resumable checkpoint's training state, in formats that cannot run code: tensors in safetensors, the rest
in JSON. Nothing here unpickles, so a run folder someone else made is safe to `--resume`.

One checkpoint directory holds:
- `trainable.safetensors`: the trainable weights by name (a LoRA's adapter, or every weight);
- `optimizer.safetensors`: the optimizer's per-parameter tensors as `NAME/KEY`, with its parameter groups and
  any non-tensor per-parameter values as JSON in the file's metadata (keyed by weight name, not position);
- `scheduler.json`, and `scaler.json` under fp16 (the gradient scaler);
- `random_states_R.safetensors` for every process R: PyTorch's CPU (and CUDA) generators as tensors, Python's
  and NumPy's in the metadata.
- `trainer_state.json`: where training stands (`TrainState`) and the run's config.
A file that is missing or does not load is a `DataError` naming it; nothing is skipped silently.
`CheckpointFolder` keeps `OUT/checkpoints/step-N/` whole: each written under a temporary name, renamed in, the
newest 2 kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sdporec.errors import DataError, brief
from sdporec.files import writing
from sdporec.runs import TRAINER_STATE

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
SCHEDULER = "scheduler.json"
SCALER = "scaler.json"
STATE_FORMAT = 1
# What accelerate's save_state wrote (pickles); sdporec no longer reads them.
PICKLED = ("optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl")


def random_states_file(rank: int) -> str:
    return f"random_states_{rank}.safetensors"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    with writing(path):
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
            str(path),
            metadata={"format": str(STATE_FORMAT), **metadata},
        )


def _write_json(obj: object, path: Path) -> None:
    with writing(path):
        path.write_text(json.dumps(obj) + "\n", encoding="utf-8")


class StateReader:
    """Reads one checkpoint directory's files, every failure a `DataError` naming the file and what to do."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.advice = f"remove {directory} to resume from the checkpoint before it, or start again with --overwrite"

    def fail(self, name: str, problem: str) -> DataError:
        return DataError(self.dir / name, None, None, f"{problem}; {self.advice}")

    def tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        from safetensors import safe_open

        path = self.dir / name
        if not path.is_file():
            raise self.fail(name, "missing from the checkpoint")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
            raise self.fail(name, f"not a readable safetensors file ({' '.join(str(e).split())[:200]})") from None
        if meta.get("format") != str(STATE_FORMAT):
            raise self.fail(name, f"format {meta.get('format')!r}, not {STATE_FORMAT}")
        return tensors, meta

    def json(self, name: str, text: str | None = None) -> object:
        path = self.dir / name
        try:
            return json.loads(path.read_text(encoding="utf-8") if text is None else text)
        except FileNotFoundError:
            raise self.fail(name, "missing from the checkpoint") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self.fail(name, f"unreadable ({' '.join(str(e).split())[:200]})") from None

    def meta_json(self, name: str, meta: dict[str, str], key: str) -> object:
        if key not in meta:
            raise self.fail(name, f"its metadata lacks {key!r}")
        return self.json(name, meta[key])


def trainable_names(model) -> list[str]:
    """The trainable weights' names, in the order the optimizer was given them."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def save_training_state(directory: Path, model, optimizer, scheduler, scaler, rank: int, main: bool) -> None:
    """Write the state of this process (random states) and, on the main process, the shared state. `model` is
    the unwrapped model whose trainable weights the optimizer steps, in `trainable_names` order."""
    if main:
        params = dict(model.named_parameters())
        names = trainable_names(model)
        _save_tensors({n: params[n] for n in names}, directory / TRAINABLE, {})
        _save_optimizer(optimizer.state_dict(), names, directory / OPTIMIZER)
        _write_json(scheduler.state_dict(), directory / SCHEDULER)
        if scaler is not None:
            _write_json(scaler.state_dict(), directory / SCALER)
    _save_random_states(directory / random_states_file(rank))


def _save_optimizer(state: dict, names: list[str], path: Path) -> None:
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{names[index]}/{key}"] = value
            else:
                scalars.setdefault(names[index], {})[key] = value
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    _save_tensors(tensors, path, {"param_groups": json.dumps(groups), "scalars": json.dumps(scalars)})


def _save_random_states(path: Path) -> None:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)]),
    }
    _save_tensors(tensors, path, meta)


def load_training_state(directory: Path, model, optimizer, scheduler, scaler, rank: int) -> None:
    """Restore what `save_training_state` wrote, checking every name and shape against the model here."""
    reader = StateReader(directory)
    pickled = [n for n in PICKLED if (directory / n).is_file()]
    if pickled and not (directory / TRAINABLE).is_file():
        raise reader.fail(
            pickled[0],
            "is a pickle, the format of an older sdporec; pickles can run code, so sdporec does not load them",
        )
    names = trainable_names(model)
    _load_weights(reader, model, names)
    _load_optimizer(reader, optimizer, names)
    try:
        scheduler.load_state_dict(reader.json(SCHEDULER))
        if scaler is not None:
            scaler.load_state_dict(reader.json(SCALER))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise reader.fail(SCHEDULER, f"does not fit this run's scheduler ({e})") from None
    _load_random_states(reader, random_states_file(rank))


def _load_weights(reader: StateReader, model, names: list[str]) -> None:
    tensors, _ = reader.tensors(TRAINABLE)
    params = dict(model.named_parameters())
    if sorted(tensors) != sorted(names):
        missing, extra = sorted(set(names) - set(tensors)), sorted(set(tensors) - set(names))
        raise reader.fail(
            TRAINABLE, f"holds other weights than this run trains (missing {missing[:3]}, not trained here {extra[:3]})"
        )
    with torch.no_grad():
        for name in names:
            if tensors[name].shape != params[name].shape:
                raise reader.fail(
                    TRAINABLE,
                    f"weight {name} has shape {tuple(tensors[name].shape)}, the model {tuple(params[name].shape)}",
                )
            params[name].copy_(tensors[name])


def _load_optimizer(reader: StateReader, optimizer, names: list[str]) -> None:
    tensors, meta = reader.tensors(OPTIMIZER)
    groups = reader.meta_json(OPTIMIZER, meta, "param_groups")
    scalars = reader.meta_json(OPTIMIZER, meta, "scalars")
    index = {n: i for i, n in enumerate(names)}
    per_param: dict[int, dict] = {}
    try:
        for key, value in tensors.items():
            name, _, slot = key.rpartition("/")
            per_param.setdefault(index[name], {})[slot] = value
        for name, values in scalars.items():
            per_param.setdefault(index[name], {}).update(values)
        for g in groups:
            g["params"] = sorted(index[n] for n in g["params"])  # positions as the optimizer here lists them
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise reader.fail(OPTIMIZER, f"does not fit this run's trainable weights ({type(e).__name__}: {e})") from None


def _load_random_states(reader: StateReader, name: str) -> None:
    tensors, meta = reader.tensors(name)
    try:
        version, internal, gauss = reader.meta_json(name, meta, "python")
        kind, pos, has_gauss, cached = reader.meta_json(name, meta, "numpy")
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k[5:]))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise reader.fail(name, f"does not hold random states ({type(e).__name__}: {e})") from None


@dataclass
class TrainState:
    """Where training stands; saved in every resumable checkpoint."""

    epoch: int = 0
    micro: int = 0  # the next micro-batch of `epoch` to run
    opt_step: int = 0  # optimizer steps taken
    best: float = -1.0  # best validation HR@1 so far
    readout: float = 0.0  # the history readout's weight λ that scored it
    elapsed: float = 0.0  # seconds trained before this invocation
    window: list[dict] = field(default_factory=list)  # per-step rows since the last log line


class CheckpointFolder:
    """`OUT/checkpoints`: one `step-N` folder per resumable checkpoint, written under a temporary name (`begin`,
    then `publish`) so that a kill at any moment leaves at least one complete checkpoint and at most two."""

    def __init__(self, root: Path):
        self.root = root

    def latest(self) -> Path | None:
        done = (
            sorted(p for p in self.root.glob("step-*") if (p / TRAINER_STATE).is_file()) if self.root.is_dir() else []
        )
        return done[-1] if done else None

    def tmp(self, step: int) -> Path:
        return self.root / f".tmp-step-{step:08d}"

    def begin(self, step: int) -> Path:
        """An empty temporary folder for checkpoint `step` (main process only); any left by a killed write go."""
        tmp = self.tmp(step)
        for stale in self.root.glob(".tmp-step-*") if self.root.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
        with writing(tmp):
            tmp.mkdir(parents=True)
        return tmp

    def write_trainer_state(self, step: int, state: TrainState, config: dict) -> None:
        path = self.tmp(step) / TRAINER_STATE
        with writing(path):
            path.write_text(json.dumps({**asdict(state), "config": config}, indent=1))

    def discard(self, step: int) -> None:
        shutil.rmtree(self.tmp(step), ignore_errors=True)

    def publish(self, step: int) -> None:
        """The finished temporary folder renamed in. Older checkpoints go first, so that a kill at any moment
        leaves at most 2 and at least 1 complete one (pruning after the rename left 3 for a moment)."""
        name = self.root / f"step-{step:08d}"
        for old in sorted(p for p in self.root.glob("step-*") if p != name)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(name, ignore_errors=True)
        os.replace(self.tmp(step), name)

    @staticmethod
    def read_trainer_state(checkpoint: Path) -> tuple[TrainState, dict]:
        """(the state, the config) a checkpoint was written with."""
        path = checkpoint / TRAINER_STATE
        try:
            saved = json.loads(path.read_text())
            config = saved.pop("config")
            return TrainState(**saved), config
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(
                path,
                None,
                None,
                f"unreadable ({brief(e)}); remove {checkpoint} to resume from the "
                "checkpoint before it, or start again with --overwrite",
            ) from None
