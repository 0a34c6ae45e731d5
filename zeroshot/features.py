"""Image features, extracted once and cached on disk in chunks; text features cached per prompt string.

An image-feature entry lives in `<cache>/image_features/<key>/`, one file per chunk of `chunk_size` images,
each written to a temp file and renamed. A killed run leaves only whole chunks, so the next run resumes after
them. Every chunk is validated (key, position, shapes) before use; a bad one is recomputed, with a line saying so.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .datasets import EvalDataset, collate


def model_key(model) -> dict:
    """What makes a model's features what they are: the weights (sha256), how they were built (architecture,
    activation, backend) and the precision they run in."""
    ident = model.identity
    return {"checkpoint_sha256": ident.sha256, "architecture": ident.architecture, "activation": ident.activation,
            "backend": ident.backend, "precision": getattr(model, "precision", "fp32")}


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: the caller recomputes
        return None


@dataclass
class Features:
    features: torch.Tensor  # [N, D] fp32, not normalized
    labels: torch.Tensor  # [N]
    indices: torch.Tensor  # [N] dataset positions, ascending
    skipped: int = 0  # unreadable images skipped (skip_bad_images=true)
    from_cache: int = 0  # how many images came from the cache rather than the model
    data_wait_s: float = 0.0  # time the model sat waiting for the DataLoader
    compute_s: float = 0.0  # time spent in encode_image (and copies)


class ImageFeatureCache:
    def __init__(self, root: str | Path, parts: dict, chunk_size: int = 2048):
        self.parts, self.key, self.chunk_size = parts, cache_key(parts), chunk_size
        self.dir = Path(root) / "image_features" / self.key

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:06d}.pt"

    def read_chunk(self, i: int, start: int, stop: int, dim: int) -> dict | None:
        """A chunk's contents if it is whole and belongs to this key; None (with a note) if it is not."""
        path = self.chunk_path(i)
        if not path.exists():
            return None
        entry = _load(path)
        ok = (
            isinstance(entry, dict)
            and entry.get("key") == self.key
            and entry.get("start") == start
            and entry.get("stop") == stop
            and entry["features"].ndim == 2
            and entry["features"].shape[1] == dim
            and len(entry["features"]) == len(entry["labels"]) == len(entry["indices"])
            and len(entry["indices"]) + int(entry["skipped"]) == stop - start
        )
        if not ok:
            print(f"zeroshot: cache entry {path} is corrupt or from other settings; recomputing it")
            return None
        return entry

    def write_meta(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():  # several ranks may get here at once: each writes its own temp file
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".meta.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"key": self.key, "parts": self.parts, "chunk_size": self.chunk_size}, indent=1, default=str))
            os.replace(tmp, meta)


def extract_features(
    model,
    dataset: EvalDataset,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    cache: ImageFeatureCache | None = None,
    positions: list[int] | None = None,
    progress: bool = False,
    chunk_size: int = 2048,
) -> Features:
    """encode_image over the dataset (or the given positions of it), reusing and filling the cache."""
    device = torch.device(device)
    positions = list(range(len(dataset))) if positions is None else list(positions)
    dim = model.embed_dim
    chunk = cache.chunk_size if cache else chunk_size
    chunks: dict[int, list[int]] = {}  # global chunk number -> its positions, so shards share chunk files
    for p in positions:
        chunks.setdefault(p // chunk, []).append(p)
    done: dict[int, dict] = {}
    if cache:
        cache.write_meta()
        for c, pos in chunks.items():
            entry = cache.read_chunk(c, pos[0], pos[-1] + 1, dim)
            if entry is not None:
                done[c] = entry
    todo = [c for c in chunks if c not in done]
    wait = compute = 0.0

    # Batches never straddle a chunk, so each chunk can be written as soon as its last batch is in.
    batches, owner = [], []
    for c in todo:
        for i in range(0, len(chunks[c]), batch_size):
            batches.append(chunks[c][i : i + batch_size])
            owner.append(c)
    if batches:
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        pending: dict[int, list] = {}
        n_cached = sum(len(chunks[c]) for c in done)
        bar = tqdm(total=len(positions), initial=n_cached, desc="images", unit="img", disable=not progress)
        with torch.inference_mode(), bar:
            batches_in = iter(loader)
            for b in range(len(batches)):
                tick = time.perf_counter()
                images, labels, indices, skipped = next(batches_in)
                tock = time.perf_counter()
                wait += tock - tick
                c = owner[b]
                if len(images):
                    feats = model.encode_image(images.to(device, non_blocking=True)).float().cpu()
                else:
                    feats = torch.empty(0, dim)
                compute += time.perf_counter() - tock
                pending.setdefault(c, []).append((feats, labels, indices, skipped))
                bar.update(len(images) + skipped)
                if b + 1 == len(batches) or owner[b + 1] != c:
                    parts = pending.pop(c)
                    entry = {
                        "key": cache.key if cache else None,
                        "start": chunks[c][0],
                        "stop": chunks[c][-1] + 1,
                        "features": torch.cat([p[0] for p in parts]),
                        "labels": torch.cat([p[1] for p in parts]),
                        "indices": torch.cat([p[2] for p in parts]),
                        "skipped": sum(p[3] for p in parts),
                    }
                    if cache:
                        atomic_save(entry, cache.chunk_path(c))
                    done[c] = entry
    ordered = [done[c] for c in sorted(chunks)]
    return Features(
        features=torch.cat([e["features"] for e in ordered]) if ordered else torch.empty(0, dim),
        labels=torch.cat([e["labels"] for e in ordered]) if ordered else torch.empty(0, dtype=torch.long),
        indices=torch.cat([e["indices"] for e in ordered]) if ordered else torch.empty(0, dtype=torch.long),
        skipped=sum(int(e["skipped"]) for e in ordered),
        from_cache=sum(len(chunks[c]) for c in chunks if c not in todo),
        data_wait_s=wait,
        compute_s=compute,
    )


class TextCache:
    """Features of each unique prompt string for one model (see model_key), in `<cache>/text_features/<key>.pt`."""

    def __init__(self, root: str | Path, key: dict | str):
        self.checkpoint = cache_key(key) if isinstance(key, dict) else str(key)
        self.path = Path(root) / "text_features" / f"{cache_key({'checkpoint': self.checkpoint})}.pt"
        self._table: dict[str, torch.Tensor] | None = None

    def _read(self) -> dict[str, torch.Tensor]:
        if self._table is None:
            self._table = {}
            if self.path.exists():
                entry = _load(self.path)
                if (
                    isinstance(entry, dict)
                    and entry.get("checkpoint") == self.checkpoint
                    and len(entry.get("prompts", [])) == len(entry.get("features", []))
                ):
                    self._table = dict(zip(entry["prompts"], entry["features"]))
                else:
                    print(f"zeroshot: text cache {self.path} is corrupt or from another checkpoint; recomputing")
        return self._table

    def get(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        table = self._read()
        return {p: table[p] for p in prompts if p in table}

    def put(self, new: dict[str, torch.Tensor]) -> None:
        table = self._read()
        table.update(new)
        prompts = list(table)
        atomic_save({"checkpoint": self.checkpoint, "prompts": prompts, "features": torch.stack([table[p] for p in prompts])}, self.path)
