"""Data-parallel evaluation under torchrun: torch.distributed with nccl on GPUs and gloo on CPUs.

Outside torchrun (or with WORLD_SIZE=1) every helper here is the identity, so the single-process path
is the same code. The dataset is split into contiguous runs of whole feature-cache chunks, one run per
rank: every image is encoded exactly once, the cache chunks a rank writes are the ones a single process
would write, and concatenating the gathered shards in rank order restores the dataset order.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable

import torch
import torch.distributed as tdist

from .features import Features


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


def build_classifier_sharded(build: Callable[[list[str]], torch.Tensor], classnames: list[str]) -> torch.Tensor:
    """Each rank encodes the prompts of its share of the classes; the [D, C] result is all-gathered."""
    if not initialized():
        return build(classnames)
    start, stop = shard_bounds(len(classnames), world_size(), rank())
    part = build(classnames[start:stop]).cpu() if stop > start else None
    parts: list = [None] * world_size()
    tdist.all_gather_object(parts, part)
    return torch.cat([p for p in parts if p is not None], dim=1)  # [D, C] in class order


def extract_features_sharded(extract: Callable[[list[int]], Features], n_images: int, chunk_size: int) -> Features | None:
    """Each rank extracts whole chunks of the dataset; rank 0 gets all features in dataset order, others None."""
    if not initialized():
        return extract(list(range(n_images)))
    n_chunks = -(-n_images // chunk_size)
    first, last = shard_bounds(n_chunks, world_size(), rank())
    positions = list(range(first * chunk_size, min(last * chunk_size, n_images)))
    mine = extract(positions)
    gathered: list = [None] * world_size() if is_main() else None
    tdist.gather_object(mine, gathered, dst=0)
    if not is_main():
        return None
    return Features(
        features=torch.cat([g.features for g in gathered]),
        labels=torch.cat([g.labels for g in gathered]),
        indices=torch.cat([g.indices for g in gathered]),
        skipped=sum(g.skipped for g in gathered),
        from_cache=sum(g.from_cache for g in gathered),
        data_wait_s=max(g.data_wait_s for g in gathered),
        compute_s=max(g.compute_s for g in gathered),
    )
