"""Image features under torchrun: what the feature cache does not already hold is split into contiguous ranges,
one per rank, whose sizes differ by at most one batch (distributed.assign); every image is encoded exactly once.
Ranges that end inside a cache chunk are written as pieces and merged into the chunk file a single process would
write, so a later run (with any number of ranks) finds the whole cache, and a resumed run computes only what is
missing, rebalanced. Outside torchrun this is features.extract.extract_features.
"""
from __future__ import annotations

from dataclasses import replace

import torch.distributed as tdist

from zeroshot import distributed as dist
from zeroshot.data.base import EvalDataset
from zeroshot.features.cache import Features, ImageFeatureCache, ImageStep
from zeroshot.features.extract import Encoding, compute, covered, extract_features, load_cached


def extract_features_sharded(model, dataset: EvalDataset, cache: ImageFeatureCache | None, how: Encoding, *,
                             shards: str = "balanced") -> Features | None:
    """All of the dataset's features on rank 0 (None on the other ranks), each image encoded exactly once.
    `shards`: how the positions still to encode are dealt to the ranks (distributed.assign)."""
    if not dist.initialized():
        return extract_features(model, dataset, cache, how)
    n, dim = len(dataset), model.embed_dim
    if cache and dist.is_main():
        cache.write_meta()
    dist.barrier()
    found = dist.broadcast_object(covered(cache, n))  # one view of the cache for all ranks
    have = {p for (a, b) in found for p in range(a, b)}
    todo = [p for p in range(n) if p not in have]
    mine = dist.assign(todo, dist.world_size(), how.batch_size, how.chunk_size, shards)[dist.rank()]
    fresh, step = compute(model, dataset, mine, cache, replace(how, progress=how.progress and dist.is_main()),
                          total=n, done=n - len(todo))
    gathered: list | None = [None] * dist.world_size() if dist.is_main() else None
    tdist.gather_object((fresh, step), gathered, dst=0)
    if not dist.is_main():
        return None
    entries = [e for part, _ in gathered for e in part]
    cached = load_cached(cache, found, set(range(n)), dim) if cache else []
    done = {p for e in cached + entries for p in range(e["start"], e["stop"])}
    missing = [p for p in range(n) if p not in done]  # a cached entry found corrupt on reading: recompute it here
    if missing:
        extra, _ = compute(model, dataset, missing, cache, replace(how, progress=False))
        entries += extra
    if cache:
        cache.merge(cached + entries, n)
    return Features.join(cached + entries, dim, from_cache=len(have), step=ImageStep.combine([g[1] for g in gathered]))
