"""Data-parallel evaluation under torchrun: torch.distributed with nccl on GPUs and gloo on CPUs.

Outside torchrun (or with WORLD_SIZE=1) every helper here is the identity, so the single-process path is the
same code. The process group and how work is dealt to ranks live here; the cache-sharded image extraction that
uses them is features/sharded.py.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable

import torch
import torch.distributed as tdist

from zeroshot.settings import check_choice


def initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    return tdist.get_world_size() if initialized() else 1


def rank() -> int:
    return tdist.get_rank() if initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(timeout_s: float = 600) -> torch.device | None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Returns the device this rank should use (cuda:LOCAL_RANK or cpu), or None when not under torchrun.
    """
    if not launched_by_torchrun():
        return None
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not initialized():
        tdist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")


def shutdown() -> None:
    if initialized():
        tdist.destroy_process_group()


def barrier() -> None:
    if initialized():
        tdist.barrier()


def local_rank_zero_first(fn: Callable):
    """Run `fn` on each node's local rank 0 first (a download or an unpack happens once), then on the others."""
    if not initialized():
        return fn()
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    result = fn() if first else None
    barrier()
    return result if first else fn()


def broadcast_object(obj):
    """Rank 0's value, on every rank."""
    if not initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shard_bounds(n_items: int, n_shards: int, shard: int) -> tuple[int, int]:
    """Contiguous [start, stop) for one shard; sizes differ by at most one and nothing is padded."""
    return n_items * shard // n_shards, n_items * (shard + 1) // n_shards


def balanced_ranges(n_items: int, n_shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) per shard whose sizes differ by at most one batch: whole batches are dealt out
    as evenly as they go, and the last, short batch goes with the last range."""
    n_batches = -(-n_items // batch_size)
    bounds = [min(n_items, shard_bounds(n_batches, n_shards, r)[0] * batch_size) for r in range(n_shards)] + [n_items]
    return list(zip(bounds[:-1], bounds[1:]))


def assign(todo: list[int], n_shards: int, batch_size: int, chunk_size: int, mode: str = "balanced") -> list[list[int]]:
    """Each rank's share of the positions still to encode. `balanced`: ranges at most one batch apart.
    `chunks`: runs of whole cache chunks (the earlier scheme, kept to measure against)."""
    if check_choice("dist_shards", mode) == "chunks":
        chunks = sorted({p // chunk_size for p in todo})
        out = []
        for r in range(n_shards):
            a, b = shard_bounds(len(chunks), n_shards, r)
            mine = set(chunks[a:b])
            out.append([p for p in todo if p // chunk_size in mine])
        return out
    return [todo[a:b] for a, b in balanced_ranges(len(todo), n_shards, batch_size)]


def build_classifier_sharded(build: Callable[[list[str]], torch.Tensor], classnames: list[str]) -> torch.Tensor:
    """Each rank encodes the prompts of its share of the classes; the [D, C] result is all-gathered."""
    if not initialized():
        return build(classnames)
    start, stop = shard_bounds(len(classnames), world_size(), rank())
    part = build(classnames[start:stop]).cpu() if stop > start else None
    parts: list = [None] * world_size()
    tdist.all_gather_object(parts, part)
    return torch.cat([p for p in parts if p is not None], dim=1)  # [D, C] in class order
