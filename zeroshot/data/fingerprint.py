"""A dataset's fingerprint: a hash that changes whenever the images, their order or their labels change.

- Images known by path (folders, and torchvision datasets that list their files): the ordered list of
  (path relative to the root, size, mtime, label). Only `stat` is called: no image is read.
- Annotation and packed files that the dataset declares (`fingerprint_files` in its config: CSV files,
  torchvision's split lists and .mat files, CIFAR batches, IDX files): their sha256, remembered per
  (path, size, mtime, inode) like checkpoints, plus the label column where there is one.
The feature cache keys on it, and each run records it, so a relabelled CSV, a moved image or a swapped
batch file can never be served stale features or merged into another dataset's report row.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path


def samples_of(source) -> list[tuple[str, int]] | None:
    """(path, label) per index for sources that list their files (torchvision keeps them in several places)."""
    n = len(source)
    for attr in ("samples", "_samples"):
        items = getattr(source, attr, None)
        if items is not None and len(items) == n and all(isinstance(x, (tuple, list)) and len(x) == 2 for x in items[:1]):
            return [(str(p), int(y)) for p, y in items]
    files, labels = getattr(source, "_image_files", None), getattr(source, "_labels", None)
    if files is not None and labels is not None and len(files) == len(labels) == n:
        return [(str(p), int(y)) for p, y in zip(files, labels)]
    if type(source).__name__ == "Caltech101" and hasattr(source, "index"):  # paths are built from (class, index)
        base = Path(source.root) / "101_ObjectCategories"
        return [(str(base / source.categories[y] / f"image_{i:04d}.jpg"), int(y)) for i, y in zip(source.index, source.y)]
    return None


def _root(source, root: str | Path | None) -> Path:
    return Path(root or getattr(source, "root", "") or ".").expanduser().resolve()


def _files(root: Path, patterns) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns or []:
        files += sorted(Path(p) for p in glob.glob(str(root / pattern)) if os.path.isfile(p))
    return files


def dataset_fingerprint(source, root: str | Path | None = None, patterns=None, extra: dict | None = None) -> dict:
    """{"digest", "kind", "n_images", "files"}: what the feature cache keys on and every run records.

    `patterns` are the annotation or packed files the dataset reads, relative to its root (glob patterns).
    `extra` holds settings that change the labels without changing any file (e.g. a CSV's label column).
    """
    from zeroshot.files import file_sha256

    base = _root(source, root)
    digest = hashlib.sha256()
    digest.update(json.dumps(extra or {}, sort_keys=True).encode())
    files = _files(base, patterns)
    hashed = {}
    for f in files:
        rel = os.path.relpath(f, base)
        hashed[rel] = file_sha256(f)
        digest.update(f"file {rel} {hashed[rel]}\n".encode())
    samples = samples_of(source)
    if hasattr(source, "fingerprint_parts"):  # a webdataset: its shards and its (key, label) order
        for line in source.fingerprint_parts():
            digest.update(f"{line}\n".encode())
        kind = "shards"
    elif samples is not None:
        for path, label in samples:
            st = os.stat(path) if os.path.exists(path) else None
            rel = os.path.relpath(path, base) if os.path.isabs(path) else path
            digest.update(f"{rel}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\0{label}\n".encode())
        kind = "files+annotations" if files else "files"
    elif files:
        kind = "packed"
    else:  # a source that lists no files and declares none: every file under its root, by stat
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                digest.update(f"{os.path.relpath(os.path.join(dirpath, name), base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        kind = "tree"
    digest.update(f"n={len(source)}".encode())
    return {"digest": digest.hexdigest(), "kind": kind, "n_images": len(source), "files": hashed, "root": str(base)}
