"""Processes and devices, through accelerate: one process, or several under `accelerate launch` / `torchrun`
(DDP; FSDP and DeepSpeed through an accelerate config file).

The engine is accelerate's (its gradient accumulation included); what is ours is how samples are split.
Training: micro-batch m of an epoch is the slice `[m*b*N, (m+1)*b*N)` of the epoch's shuffled order
(b = batch size, N = processes) and process r takes the r-th `b` of it; an optimizer step is `grad_accum`
consecutive micro-batches. So N processes with batch size b and G accumulation steps see the same global
batches, in the same order, as one process with batch size N*b*G. The epoch's last slice may be short:
each sample is still used once (no wrap-around), and a process left without samples runs one padding
sample with weight 0, so that every process takes part in every collective.
Scoring's share of samples per process lives in `sdporec.processes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from sdporec.errors import ConfigError

T = TypeVar("T")


def sharded_launch() -> str | None:
    """ "FSDP" or "DeepSpeed" where `accelerate launch` was given such a config (read from the environment it
    sets, by accelerate's own parser), else None."""
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    return "DeepSpeed" if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") else None


def make_accelerator(device: str, mixed_precision: str, grad_accum: int = 1):
    """An Accelerator for a training run, accumulating gradients over `grad_accum` micro-batches. `device`
    is auto, cpu, cuda or cuda:N (one process)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    if device.startswith("cuda") and not cuda:
        raise ConfigError(f"setting 'device': {device} asked for, but CUDA is not available here")
    sharded = sharded_launch()
    if sharded and (device == "cpu" or not cuda):
        # On CPU accelerate would quietly run plain data parallelism instead (measured with FSDP).
        where = "--device cpu was given" if cuda else "no CUDA GPU is available here"
        raise ConfigError(
            f"setting 'device': the accelerate config asks for {sharded}, which shards the model over "
            f"CUDA GPUs, but {where}; on CPU launch with a DDP config or none"
        )
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
    # The accelerator state is process-wide; a second run in the same process (tests, the pipeline) may
    # ask for another precision, which accelerate refuses unless the old state is cleared first.
    AcceleratorState._reset_state(reset_partial_state=False)
    # "no" leaves the choice to `accelerate launch`'s config (ACCELERATE_MIXED_PRECISION), if any.
    return Accelerator(
        cpu=device == "cpu" or not cuda,
        mixed_precision=None if mixed_precision == "no" else mixed_precision,
        gradient_accumulation_steps=grad_accum,
    )


def deepspeed_settings(batch_size: int, grad_accum: int, max_grad_norm: float) -> dict:
    """What sdporec writes into DeepSpeed's config: DeepSpeed wants its micro-batch size up front (no
    DataLoader is prepared that it could read it from), counts accumulation itself and clips itself
    (accelerate's clipping is a no-op under it)."""
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm,
    }


def set_seed(seed: int) -> None:
    """Python's, NumPy's and PyTorch's (CPU and every GPU) random generators."""
    from accelerate.utils import set_seed as accelerate_set_seed

    accelerate_set_seed(seed)


def finish() -> None:
    """Ends a multi-process run cleanly: wait for every process, then tear the process group down.

    This alone does not stop a finished rank from aborting in interpreter teardown (measured: still about
    1 run in 50); `cli.entry` also leaves launched processes without teardown.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def global_micro_batch(order: Sequence[int], micro: int, batch_size: int, world: int) -> list[int]:
    """Indices of global micro-batch `micro`, all processes' shares in process order (may be short at the end)."""
    span = batch_size * world
    return list(order[micro * span : (micro + 1) * span])


def micro_batch(order: Sequence[int], micro: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of this process's share of global micro-batch `micro` (see the module docstring); fewer
    than `batch_size`, or none, in an epoch's short last micro-batch."""
    return global_micro_batch(order, micro, batch_size, world)[rank * batch_size : (rank + 1) * batch_size]
