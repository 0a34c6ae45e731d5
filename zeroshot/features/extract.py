"""Image feature extraction: cached chunks reused, the rest encoded through a DataLoader and saved as each
segment completes (so a killed run resumes), non-finite features named by their image.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from zeroshot.data.base import (
    EvalDataset,
    TimedSamples,
    available_cores,
    check_batch,
    collate,
    idle_priority,
)
from zeroshot.errors import CheckpointError
from zeroshot.features.cache import Features, ImageFeatureCache, ImageStep


def check_finite(feats: torch.Tensor, name_of, what: str) -> None:
    """Non-finite features make every score after them nonsense: stop at the first one, naming its input."""
    bad = ~torch.isfinite(feats).all(dim=-1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise CheckpointError(f"the model gave non-finite (NaN or inf) features for {what} {name_of(row)} "
                              f"({int(bad.sum())} of {len(feats)} in this batch): the weights or the precision are broken "
                              "(try precision=fp32, and check the checkpoint)")


def segments(positions: list[int], chunk_size: int) -> list[tuple[int, int]]:
    """Contiguous runs of positions that stay inside one chunk: the unit of caching (whole chunk or piece)."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p and p % chunk_size:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


def covered(cache: ImageFeatureCache | None, n_images: int) -> dict[tuple[int, int], Path]:
    return cache.entries(n_images) if cache else {}


@dataclass(frozen=True)
class Encoding:
    """How a dataset's images are read and encoded: one extraction's settings, passed whole."""
    batch_size: int = 64
    num_workers: int = 0
    device: torch.device | str = "cpu"
    chunk_size: int = 2048  # images per cache chunk where no cache gives its own
    progress: bool = False
    worker_priority: str = "normal"  # idle: the decoding workers run only on cores the model leaves idle
    thumbnails: Callable | None = None  # PIL image -> thumbnail, made by the loader for each image it decodes


def plan_batches(segs: list[tuple[int, int]], batch_size: int) -> tuple[list[list[int]], list[int]]:
    """The batches over the segments (none straddles two) and the segment each belongs to."""
    batches, owner = [], []
    for s, (a, b) in enumerate(segs):
        for i in range(a, b, batch_size):
            batches.append(list(range(i, min(i + batch_size, b))))
            owner.append(s)
    return batches, owner


def loader(dataset: EvalDataset, batches: list[list[int]], how: Encoding):
    """A DataLoader yielding the batches with each sample's decode cost (data.base.TimedSamples)."""
    from torch.utils.data import DataLoader

    if hasattr(dataset.transform, "materialize"):  # a transform built on first use: built once here, not in each worker
        dataset.transform.materialize()
    if how.thumbnails is not None:
        dataset = dataset.with_thumbnails(how.thumbnails)
    return DataLoader(TimedSamples(dataset), batch_sampler=batches, num_workers=how.num_workers, collate_fn=collate,
                      pin_memory=torch.device(how.device).type == "cuda", persistent_workers=False,
                      worker_init_fn=idle_priority if how.num_workers and how.worker_priority == "idle" else None)


def compute(model, dataset: EvalDataset, positions: list[int], cache: ImageFeatureCache | None, how: Encoding, *,
            total: int = 0, done: int = 0) -> tuple[list[dict], ImageStep]:
    """encode_image over `positions`, saving each segment to the cache as soon as its last batch is in; also how
    the step went (waits, encode time, each sample's decode cost). The progress bar counts `done` of `total`
    (default: of the positions here)."""
    from tqdm import tqdm

    dim, n_images = model.embed_dim, len(dataset)
    segs = segments(positions, cache.chunk_size if cache else how.chunk_size)
    batches, owner = plan_batches(segs, how.batch_size)
    out: list[dict] = []
    step = ImageStep(threads=torch.get_num_threads(), workers=how.num_workers, cores=available_cores())
    if not batches:
        return out, step
    schedulers: set[str] = set()
    pending: list = []
    bar = tqdm(total=total or len(positions), initial=done, desc="images", unit="img", disable=not how.progress)
    with torch.inference_mode(), bar:
        batches_in = iter(loader(dataset, batches, how))
        for b in range(len(batches)):
            tick = time.perf_counter()
            images, labels, indices, skipped, decode_s, samples, scheduler, thumbs = check_batch(next(batches_in))
            tock = time.perf_counter()
            step.wait_s += tock - tick
            step.decode_cpu_s += decode_s
            step.decoded += samples
            step.encoded += len(images)
            step.thumbnails.update(thumbs)
            schedulers.add(scheduler)
            if len(images):
                feats = model.encode_image(images.to(how.device, non_blocking=True)).float().cpu()
                check_finite(feats, lambda row: dataset.describe(int(indices[row])), "image")
            else:
                feats = torch.empty(0, dim)
            step.encode_s += time.perf_counter() - tock
            pending.append((feats, labels, indices, skipped))
            bar.update(len(images) + skipped)
            if b + 1 == len(batches) or owner[b + 1] != owner[b]:
                a, z = segs[owner[b]]
                entry = {"key": cache.key if cache else None, "start": a, "stop": z,
                         "features": torch.cat([p[0] for p in pending]), "labels": torch.cat([p[1] for p in pending]),
                         "indices": torch.cat([p[2] for p in pending]), "skipped": sum(p[3] for p in pending)}
                pending = []
                if cache:
                    cache.save(entry, n_images)
                out.append(entry)
    step.scheduler = ", ".join(sorted(schedulers))
    return out, step


def load_cached(cache: ImageFeatureCache, found: dict[tuple[int, int], Path], wanted: set[int], dim: int) -> list[dict]:
    """The valid cached entries among `found` that hold wanted positions (corrupt ones are dropped, noted)."""
    out, end = [], -1
    for (a, b), path in sorted(found.items()):
        if a < end or not any(p in wanted for p in range(a, b)):
            continue  # overlaps an entry taken already (pieces of two differently split runs), or not wanted
        entry = cache.read(path, a, b, dim)
        if entry is not None:
            out.append(entry)
            end = b
    return out


def extract_features(model, dataset: EvalDataset, cache: ImageFeatureCache | None = None, how: Encoding = Encoding(),
                     *, positions: list[int] | None = None) -> Features:
    """encode_image over the dataset (or the given positions), in one process: cached entries are reused,
    the rest computed, saved, and merged into whole chunks. Under torchrun: features.sharded."""
    n = len(dataset)
    positions = list(range(n)) if positions is None else sorted(positions)
    dim = model.embed_dim
    if cache:
        cache.write_meta()
    cached = load_cached(cache, covered(cache, n), set(positions), dim) if cache else []
    have = {p for e in cached for p in range(e["start"], e["stop"])}
    todo = [p for p in positions if p not in have]
    fresh, step = compute(model, dataset, todo, cache, how, total=len(positions), done=len(positions) - len(todo))
    if cache:
        cache.merge(cached + fresh, n)
    feats = Features.join(cached + fresh, dim, from_cache=len(positions) - len(todo), step=step)
    keep = torch.isin(feats.indices, torch.tensor(positions, dtype=torch.long)) if positions != list(range(n)) else None
    if keep is not None and not bool(keep.all()):  # cached entries may hold more than asked for
        feats = dataclasses.replace(feats, features=feats.features[keep], labels=feats.labels[keep],
                                    indices=feats.indices[keep])
    return feats
