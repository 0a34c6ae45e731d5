"""The feature caches: image features in chunks keyed by everything that changes them (weights, preprocessing,
precision, images), and text features per prompt string and model, append-only so concurrent writers never
lose entries. A cache that cannot be written warns once and the run goes on.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zeroshot.files import atomic_write
from zeroshot.log import log


def model_key(model) -> dict:
    """What makes a model's features what they are: the weights (sha256), how they were built (architecture,
    activation, backend) and the precision they run in."""
    ident = model.identity
    key = {"checkpoint_sha256": ident.sha256, "architecture": ident.architecture, "activation": ident.activation,
           "backend": ident.backend, "precision": getattr(model, "precision", "fp32")}
    if getattr(model, "text_language", None):  # NLLB: the tokenizer's language code changes every prompt's tokens
        key["text_language"] = model.text_language
    return key


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def atomic_save(obj, path: Path) -> None:
    """torch.save, whole or not at all (files.atomic_write): readers never see half a file."""
    with atomic_write(path) as f:
        torch.save(obj, f)


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
            log.warning(f"the {self.what} at {self.folder} cannot be written ({unwritable_reason(e)}); "
                  "this run goes on without caching it")
            return False


def content_digest(tensors: list[torch.Tensor], extra: object = None) -> str:
    """A checksum of a cache entry's contents: CRC-32 of `extra` (e.g. the prompt strings), then of each tensor's
    dtype, shape and raw bytes, so bytes garbled in place (same size, still a valid zip) are caught on read.
    CRC-32 because it is a fault check, not a seal (whoever can write the cache can write its checksum), and
    because it is the cheapest: about 0.4 ms per MB here, less than reading the file (docs/trust.md)."""
    parts = [zlib.crc32(json.dumps(extra, sort_keys=True, default=str).encode())]
    for t in tensors:
        t = t.detach().cpu().contiguous()
        parts.append(zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), zlib.crc32(f"{t.dtype}{tuple(t.shape)}".encode())))
    return "crc32:" + "-".join(f"{p:08x}" for p in parts)


def _image_digest(entry: dict) -> str:
    return content_digest([entry["features"], entry["labels"], entry["indices"]],
                          [entry["key"], entry["start"], entry["stop"], int(entry["skipped"])])


def _text_digest(entry: dict) -> str:
    return content_digest([entry["features"]], [entry["checkpoint"], list(entry["prompts"])])


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated, foreign or vanished file: the caller recomputes
        return None


@dataclass
class ImageStep:
    """How the images this run encoded went through the DataLoader and the model: the times and costs behind
    metrics.json's image-step keys (`metrics`). All zero when every image came from the cache."""

    wait_s: float = 0.0  # the model waiting for the DataLoader
    encode_s: float = 0.0  # encode_image (and copies)
    decode_cpu_s: float = 0.0  # CPU time of reading, decoding and transforming, summed over samples
    decoded: int = 0  # samples that time covers (readable or not)
    encoded: int = 0  # images through encode_image
    threads: int = 0  # the model's intra-op threads (torch.get_num_threads)
    workers: int = 0  # DataLoader workers (0: decoded in the main process)
    scheduler: str = ""  # how the decoding processes were scheduled, as they reported it (data.base.scheduling)
    cores: int = 0  # the cores the process could run on
    # dataset index -> the thumbnail the loader made while decoding the image (Encoding.thumbnails), for the gallery
    thumbnails: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def combine(parts: list["ImageStep"]) -> "ImageStep":
        """Several ranks' steps as one: decode costs summed, waits and encode times of the slowest rank."""
        parts = [p for p in parts if p.decoded or p.encoded] or parts[:1]
        if not parts:
            return ImageStep()
        return ImageStep(max(p.wait_s for p in parts), max(p.encode_s for p in parts),
                         sum(p.decode_cpu_s for p in parts), sum(p.decoded for p in parts), sum(p.encoded for p in parts),
                         max(p.threads for p in parts), max(p.workers for p in parts),
                         ", ".join(sorted({p.scheduler for p in parts if p.scheduler})), max(p.cores for p in parts),
                         {k: v for p in parts for k, v in p.thumbnails.items()})

    def metrics(self) -> dict:
        """metrics.json's image-step keys (README, "Loader and model balance"); the costs are None without images.

        decode and model costs are core-milliseconds per image; the bound is what the cores allow if they did
        nothing else: cores / (decode + model core-seconds per image); the share is the achieved rate over it."""
        decode = 1000 * self.decode_cpu_s / self.decoded if self.decoded else None
        model = 1000 * self.encode_s * self.threads / self.encoded if self.encoded else None
        bound = 1000 * self.cores / (decode + model) if decode is not None and model is not None and decode + model > 0 else None
        step = self.wait_s + self.encode_s
        rate = self.encoded / step if self.encoded and step > 0 else None
        return {"decode_core_ms_per_image": decode, "model_core_ms_per_image": model, "model_threads": self.threads,
                "loader_thumbnails": len(self.thumbnails),
                "decode_workers": self.workers, "decode_scheduler": self.scheduler or None, "cores": self.cores,
                "image_step_bound_images_per_s": bound, "image_step_images_per_s": rate,
                "image_step_share_of_bound": rate / bound if rate is not None and bound else None}


@dataclass
class Features:
    features: torch.Tensor  # [N, D] fp32, not normalized
    labels: torch.Tensor  # [N]
    indices: torch.Tensor  # [N] dataset positions, ascending
    skipped: int = 0  # unreadable images skipped (skip_bad_images=true)
    from_cache: int = 0  # how many images came from the cache rather than the model
    step: ImageStep = field(default_factory=ImageStep)  # how the rest went through the loader and the model

    @property
    def data_wait_s(self) -> float:  # time the model sat waiting for the DataLoader
        return self.step.wait_s

    @property
    def compute_s(self) -> float:  # time spent in encode_image (and copies)
        return self.step.encode_s

    @staticmethod
    def join(entries: list[dict], dim: int, from_cache: int = 0, step: ImageStep | None = None) -> "Features":
        entries = sorted(entries, key=lambda e: e["start"])
        cat = (lambda k, dtype: torch.cat([e[k] for e in entries]) if entries else torch.empty(0, dtype=dtype))
        return Features(features=torch.cat([e["features"] for e in entries]) if entries else torch.empty(0, dim),
                        labels=cat("labels", torch.long), indices=cat("indices", torch.long),
                        skipped=sum(int(e["skipped"]) for e in entries), from_cache=from_cache, step=step or ImageStep())


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
            log.warning("cache entry %s is corrupt or from other settings; recomputing it", path)
            return None
        if entry.get("checksum") != _image_digest(entry):
            log.warning("cache entry %s fails its checksum (its contents changed after it was written, or an older "
                        "zeroshot wrote it without one); recomputing it", path)
            return None
        return entry

    def save(self, entry: dict, n_images: int) -> None:
        entry = {**entry, "checksum": _image_digest(entry)}
        self.writer.write(lambda: atomic_save(entry, self.path_for(entry["start"], entry["stop"], n_images)))

    def write_meta(self) -> None:
        def write():
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "meta.json"
            if not meta.exists():  # several ranks may get here at once: each writes its own temp file
                with atomic_write(meta, "w") as f:
                    f.write(json.dumps({"key": self.key, "parts": self.parts, "chunk_size": self.chunk_size},
                                       indent=1, default=str))

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
            whole["checksum"] = _image_digest(whole)
            if self.writer.write(lambda: atomic_save(whole, self.chunk_path(chunk))):
                for p in parts:
                    self.path_for(p["start"], p["stop"], n_images).unlink(missing_ok=True)


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
                    if entry.get("checksum") != _text_digest(entry):
                        log.warning("text cache file %s fails its checksum (its contents changed after it was "
                                    "written, or an older zeroshot wrote it without one); recomputing its prompts", path)
                        continue
                    self._table.update(zip(entry["prompts"], entry["features"]))
                    self._files.append(path)
                elif path.exists():
                    log.warning("text cache file %s is corrupt or from another model; ignoring it", path)
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
        if self.writer.write(lambda: atomic_save(self._entry(prompts, torch.stack([new[p] for p in prompts])), path)):
            self._files.append(path)
        if len(self._files) > self.MAX_FILES:
            self._compact(table)

    def _entry(self, prompts: list[str], features: torch.Tensor) -> dict:
        entry = {"checkpoint": self.checkpoint, "prompts": prompts, "features": features}
        return {**entry, "checksum": _text_digest(entry)}

    def _compact(self, table: dict[str, torch.Tensor]) -> None:
        prompts, merged, old = list(table), self._file(), list(self._files)
        if self.writer.write(lambda: atomic_save(self._entry(prompts, torch.stack([table[p] for p in prompts])), merged)):
            for path in old:
                path.unlink(missing_ok=True)
            self._files = [merged]
