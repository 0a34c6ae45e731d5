"""Image features, extracted once and cached on disk in chunks; text features cached per prompt string.

An image-feature entry lives in `<cache>/image_features/<key>/` as one file per chunk of `chunk_size` images
(`chunk_000003.pt`), each written to a temp file and renamed. Work that covers only part of a chunk (a rank
of a distributed run whose range ends mid-chunk, or a killed run) is kept as a piece
(`chunk_000003.part_6200_6600.pt`); once a chunk's pieces tile it they are merged into the chunk file, so the
cache a distributed run leaves is the one a single process would write. A run reuses every whole chunk and
piece, and computes only what they do not cover. Every entry is validated (key, range, shapes) before use; a
bad one is recomputed, with a line saying so.

A cache that cannot be written (a full disk, a read-only folder) never fails a run: the first failure is
reported once, naming the folder and the reason, and the run goes on uncached, leaving no partial file.
The text cache is append-only (one file per write), so concurrent writers never drop each other's entries.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .datasets import EvalDataset, check_batch, collate
from .errors import CheckpointError


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


def unwritable_reason(e: BaseException) -> str:
    codes = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "not a directory"}
    if isinstance(e, OSError) and e.errno in codes:
        return codes[e.errno]
    if isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "enforce fail" in str(e)):
        return "the write was cut short (usually a full disk)"
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class CacheWriter:
    """Best-effort writes: the first failure turns caching off for this run, with one warning."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what, self.writable = folder, what, True

    def write(self, fn) -> bool:
        if not self.writable:
            return False
        try:
            fn()
            return True
        except (OSError, RuntimeError) as e:
            self.writable = False
            print(f"zeroshot: warning: the {self.what} at {self.folder} cannot be written ({unwritable_reason(e)}); "
                  "this run goes on without caching it", file=sys.stderr, flush=True)
            return False


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated, foreign or vanished file: the caller recomputes
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

    @staticmethod
    def join(entries: list[dict], dim: int, **timings) -> "Features":
        entries = sorted(entries, key=lambda e: e["start"])
        cat = (lambda k, dtype: torch.cat([e[k] for e in entries]) if entries else torch.empty(0, dtype=dtype))
        return Features(features=torch.cat([e["features"] for e in entries]) if entries else torch.empty(0, dim),
                        labels=cat("labels", torch.long), indices=cat("indices", torch.long),
                        skipped=sum(int(e["skipped"]) for e in entries), **timings)


_PIECE = re.compile(r"chunk_(\d{6})(?:\.part_(\d+)_(\d+))?\.pt$")


class ImageFeatureCache:
    def __init__(self, root: str | Path, parts: dict, chunk_size: int = 2048):
        self.parts, self.key, self.chunk_size = parts, cache_key(parts), chunk_size
        self.dir = Path(root) / "image_features" / self.key
        self.writer = CacheWriter(self.dir, "feature cache")

    def chunk_range(self, chunk: int, n_images: int) -> tuple[int, int]:
        return chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, n_images)

    def path_for(self, start: int, stop: int, n_images: int) -> Path:
        """The whole-chunk file for a whole chunk, else a piece file."""
        chunk = start // self.chunk_size
        if (start, stop) == self.chunk_range(chunk, n_images):
            return self.dir / f"chunk_{chunk:06d}.pt"
        return self.dir / f"chunk_{chunk:06d}.part_{start}_{stop}.pt"

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:06d}.pt"

    def entries(self, n_images: int) -> dict[tuple[int, int], Path]:
        """(start, stop) -> file of every whole chunk and every piece of a chunk that has no whole file, by name."""
        found: dict[tuple[int, int], Path] = {}
        whole: set[int] = set()
        if not self.dir.is_dir():
            return found
        for path in sorted(self.dir.glob("chunk_*.pt")):
            m = _PIECE.match(path.name)
            if not m:
                continue
            chunk = int(m.group(1))
            if m.group(2) is None:
                found[self.chunk_range(chunk, n_images)] = path
                whole.add(chunk)
            else:
                found[(int(m.group(2)), int(m.group(3)))] = path
        return {r: p for r, p in found.items() if ".part_" not in p.name or (r[0] // self.chunk_size) not in whole}

    def read(self, path: Path, start: int, stop: int, dim: int) -> dict | None:
        """An entry's contents if it is whole and belongs to this key; None (with a note) if it is not."""
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

    def save(self, entry: dict, n_images: int) -> None:
        self.writer.write(lambda: atomic_save(entry, self.path_for(entry["start"], entry["stop"], n_images)))

    def write_meta(self) -> None:
        def write():
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "meta.json"
            if not meta.exists():  # several ranks may get here at once: each writes its own temp file
                fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".meta.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        f.write(json.dumps({"key": self.key, "parts": self.parts, "chunk_size": self.chunk_size},
                                           indent=1, default=str))
                    os.replace(tmp, meta)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)

        self.writer.write(write)

    def merge(self, entries: list[dict], n_images: int) -> None:
        """Write the whole-chunk file of every chunk these entries tile, then remove its pieces."""
        by_chunk: dict[int, list[dict]] = {}
        for e in entries:
            by_chunk.setdefault(e["start"] // self.chunk_size, []).append(e)
        for chunk, parts in by_chunk.items():
            start, stop = self.chunk_range(chunk, n_images)
            parts = sorted(parts, key=lambda e: e["start"])
            if len(parts) < 2 or parts[0]["start"] != start or parts[-1]["stop"] != stop or any(
                    a["stop"] != b["start"] for a, b in zip(parts, parts[1:])):
                continue
            whole = {"key": self.key, "start": start, "stop": stop,
                     "features": torch.cat([p["features"] for p in parts]), "labels": torch.cat([p["labels"] for p in parts]),
                     "indices": torch.cat([p["indices"] for p in parts]), "skipped": sum(int(p["skipped"]) for p in parts)}
            if self.writer.write(lambda: atomic_save(whole, self.chunk_path(chunk))):
                for p in parts:
                    self.path_for(p["start"], p["stop"], n_images).unlink(missing_ok=True)


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


def compute(model, dataset: EvalDataset, positions: list[int], batch_size: int, num_workers: int, device,
            cache: ImageFeatureCache | None, chunk_size: int, progress_total: int = 0, progress_done: int = 0,
            progress: bool = False) -> tuple[list[dict], float, float]:
    """encode_image over `positions`, saving each segment to the cache as soon as its last batch is in."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    dim, n_images = model.embed_dim, len(dataset)
    segs = segments(positions, cache.chunk_size if cache else chunk_size)
    batches, owner = [], []
    for s, (a, b) in enumerate(segs):  # batches never straddle a segment
        for i in range(a, b, batch_size):
            batches.append(list(range(i, min(i + batch_size, b))))
            owner.append(s)
    out: list[dict] = []
    wait = spent = 0.0
    if not batches:
        return out, wait, spent
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    pending: list = []
    bar = tqdm(total=progress_total or len(positions), initial=progress_done, desc="images", unit="img", disable=not progress)
    with torch.inference_mode(), bar:
        batches_in = iter(loader)
        for b in range(len(batches)):
            tick = time.perf_counter()
            images, labels, indices, skipped = check_batch(next(batches_in))
            tock = time.perf_counter()
            wait += tock - tick
            if len(images):
                feats = model.encode_image(images.to(device, non_blocking=True)).float().cpu()
                check_finite(feats, lambda row: dataset.describe(int(indices[row])), "image")
            else:
                feats = torch.empty(0, dim)
            spent += time.perf_counter() - tock
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
    return out, wait, spent


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
    """encode_image over the dataset (or the given positions), in one process: cached entries are reused,
    the rest computed, saved, and merged into whole chunks."""
    n = len(dataset)
    positions = list(range(n)) if positions is None else sorted(positions)
    dim = model.embed_dim
    if cache:
        cache.write_meta()
    cached = load_cached(cache, covered(cache, n), set(positions), dim) if cache else []
    have = {p for e in cached for p in range(e["start"], e["stop"])}
    todo = [p for p in positions if p not in have]
    fresh, wait, spent = compute(model, dataset, todo, batch_size, num_workers, device, cache, chunk_size,
                                 len(positions), len(positions) - len(todo), progress)
    if cache:
        cache.merge(cached + fresh, n)
    feats = Features.join(cached + fresh, dim, from_cache=len(positions) - len(todo), data_wait_s=wait, compute_s=spent)
    keep = torch.isin(feats.indices, torch.tensor(positions, dtype=torch.long)) if positions != list(range(n)) else None
    if keep is not None and not bool(keep.all()):  # cached entries may hold more than asked for
        feats = Features(feats.features[keep], feats.labels[keep], feats.indices[keep], feats.skipped, feats.from_cache,
                         feats.data_wait_s, feats.compute_s)
    return feats


class TextCache:
    """Features of each unique prompt string for one model (see model_key), in `<cache>/text_features/<key>/`.

    Append-only: every write is a new file holding only the new prompts, so two processes (or ranks) writing at
    once never drop each other's entries; reading merges all files. Past 64 files, a writer folds the files it
    read into one and removes just those, so what others wrote meanwhile stays.
    """

    MAX_FILES = 64

    def __init__(self, root: str | Path, key: dict | str):
        self.checkpoint = cache_key(key) if isinstance(key, dict) else str(key)
        self.dir = Path(root) / "text_features" / cache_key({"checkpoint": self.checkpoint})
        self.writer = CacheWriter(self.dir, "text cache")
        self._table: dict[str, torch.Tensor] | None = None
        self._files: list[Path] = []

    def _read(self) -> dict[str, torch.Tensor]:
        if self._table is None:
            self._table, self._files = {}, []
            for path in sorted(self.dir.glob("*.pt")) if self.dir.is_dir() else []:
                entry = _load(path)
                if (isinstance(entry, dict) and entry.get("checkpoint") == self.checkpoint
                        and len(entry.get("prompts", [])) == len(entry.get("features", []))):
                    self._table.update(zip(entry["prompts"], entry["features"]))
                    self._files.append(path)
                elif path.exists():
                    print(f"zeroshot: text cache file {path} is corrupt or from another model; ignoring it")
        return self._table

    def get(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        table = self._read()
        return {p: table[p] for p in prompts if p in table}

    def _file(self) -> Path:
        return self.dir / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.pt"

    def put(self, new: dict[str, torch.Tensor]) -> None:
        table = self._read()
        table.update(new)
        if not new:
            return
        prompts = list(new)
        path = self._file()
        if self.writer.write(lambda: atomic_save({"checkpoint": self.checkpoint, "prompts": prompts,
                                                  "features": torch.stack([new[p] for p in prompts])}, path)):
            self._files.append(path)
        if len(self._files) > self.MAX_FILES:
            self._compact(table)

    def _compact(self, table: dict[str, torch.Tensor]) -> None:
        prompts, merged, old = list(table), self._file(), list(self._files)
        if self.writer.write(lambda: atomic_save({"checkpoint": self.checkpoint, "prompts": prompts,
                                                  "features": torch.stack([table[p] for p in prompts])}, merged)):
            for path in old:
                path.unlink(missing_ok=True)
            self._files = [merged]
