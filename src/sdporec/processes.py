"""Process helpers that scoring and training share: which samples each of several processes scores, and
gathering their rows back in order.

Each process takes a contiguous slice, padded to the same length on every process (sharded models run one
collective per forward, so every process must run as many batches), and the padding is dropped before the
rows are gathered in process order: every sample is scored exactly once and rows keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def process_state(device: str = "auto"):
    """Rank, world size and device, for commands that only score (evaluate, the reference pass)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def several_processes() -> bool:
    """Whether this process is one of several (torch.distributed started with more than one): then each keeps
    decoding until all are done (`generate`'s synced_gpus), as a sharded model's every forward is a collective."""
    import torch

    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def shard(items: Sequence[T], rank: int, world: int) -> Sequence[T]:
    """The contiguous slice of `items` that process `rank` of `world` scores."""
    per, extra = divmod(len(items), world)
    start = rank * per + min(rank, extra)
    return items[start : start + per + (rank < extra)]


def even_shard(items: Sequence[T], rank: int, world: int) -> tuple[list[T], int]:
    """`shard`, padded by repeating an item to the same length on every process: (the padded slice, how
    many of its items are real). Every process then runs as many batches as every other."""
    part = list(shard(items, rank, world))
    longest = -(-len(items) // world)
    if not items:
        return [], 0
    return part + [part[-1] if part else items[0]] * (longest - len(part)), len(part)


def gather(rows: list, world: int) -> list:
    """Every process's rows, concatenated in process order (on every process)."""
    if world == 1:
        return list(rows)
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, rows)
    return [r for part in parts for r in part]
