"""Processes and devices, through accelerate: one process, or several under `accelerate launch` / `torchrun`
(DDP; FSDP and DeepSpeed through an accelerate config file).

The engine is accelerate's; what is ours is how samples are split. Training: each optimizer micro-step
takes `batch_size x processes` samples from the epoch's shuffled order and process r takes the r-th
`batch_size` of them, so N processes with batch size b see the same global batches, in the same order, as
one process with batch size N*b. Scoring: each process takes a contiguous slice of the samples and the
results are gathered in process order, so every sample is scored exactly once and rows keep their order.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch

from .config import ConfigError

T = TypeVar("T")


def make_accelerator(device: str, mixed_precision: str):
    """An Accelerator for a training run. `device` is auto, cpu, cuda or cuda:N (one process)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    if device.startswith("cuda") and not cuda:
        raise ConfigError(f"setting 'device': {device} asked for, but CUDA is not available here")
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
    # The accelerator state is process-wide; a second run in the same process (tests, the pipeline) may
    # ask for another precision, which accelerate refuses unless the old state is cleared first.
    AcceleratorState._reset_state(reset_partial_state=False)
    # "no" leaves the choice to `accelerate launch`'s config (ACCELERATE_MIXED_PRECISION), if any.
    return Accelerator(cpu=device == "cpu" or not cuda, mixed_precision=None if mixed_precision == "no" else mixed_precision)


def set_seed(seed: int) -> None:
    """Python's, NumPy's and PyTorch's (CPU and every GPU) random generators."""
    from accelerate.utils import set_seed as accelerate_set_seed

    accelerate_set_seed(seed)


def process_state(device: str = "auto"):
    """Rank, world size and device, for commands that only score (evaluate, the reference pass)."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def finish() -> None:
    """Ends a multi-process run cleanly: wait for every process, then tear the process group down.

    This alone does not stop a finished rank from aborting in interpreter teardown (measured: still about
    1 run in 50); `cli.entry` also leaves launched processes without teardown.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world: int) -> Sequence[T]:
    """The contiguous slice of `items` that process `rank` of `world` scores."""
    per, extra = divmod(len(items), world)
    start = rank * per + min(rank, extra)
    return items[start:start + per + (rank < extra)]


def gather(rows: list, world: int) -> list:
    """Every process's rows, concatenated in process order (on every process)."""
    if world == 1:
        return list(rows)
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


def micro_batch(order: Sequence[int], micro: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of this process's share of global micro-batch `micro` (see the module docstring)."""
    span = batch_size * world
    chunk = list(order[micro * span:(micro + 1) * span])
    if world > 1 and len(chunk) < span:
        # The last global batch is short: wrap around so every process gets a full share and the
        # processes stay in step (as torch's DistributedSampler does).
        chunk += list(order[:span - len(chunk)])
    return chunk[rank * batch_size:(rank + 1) * batch_size]
