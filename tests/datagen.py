"""Small datasets written in their real on-disk formats, for torchvision's real readers."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _images(n: int, size: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, size, size, channels) if channels > 1 else (n, size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_cifar(root: Path, n: int = 23, hundred: bool = False, seed: int = 0) -> Path:
    """CIFAR-10/100 python pickle batches: data [N, 3072] uint8 (channel-major rows), labels, meta."""
    n_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = _images(n, 32, seed).transpose(0, 3, 1, 2).reshape(n, 3072)  # HWC -> CHW rows, as CIFAR stores them
    labels = rng.integers(0, n_classes, n).tolist()
    key = "fine_labels" if hundred else "labels"
    batch = {"data": images, key: labels, "filenames": [f"img_{i}.png" for i in range(n)]}
    with open(folder / ("test" if hundred else "test_batch"), "wb") as f:
        pickle.dump(batch, f, protocol=2)
    if hundred:
        meta = {"fine_label_names": [f"class_{i:02d}" for i in range(100)], "coarse_label_names": []}
        meta_name = "meta"
    else:
        meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
        meta_name = "batches.meta"
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


def write_idx(root: Path, n: int = 31, seed: int = 0, name: str = "MNIST") -> Path:
    """MNIST IDX files (big-endian magic 0x0803 images / 0x0801 labels) in <root>/<name>/raw/."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images = _images(n, 28, seed, channels=1)
    labels = np.random.default_rng(seed).integers(0, 10, n).astype(np.uint8)
    (raw / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.tobytes())
    return root


def write_imagefolder(root: Path, classes: list[str], per_class: int = 3, seed: int = 0, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(size // 2, size * 2, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


def write_csv(root: Path, classes: list[str], per_class: int = 3, by_name: bool = True) -> Path:
    write_imagefolder(root / "images", classes, per_class)
    rows = ["path,label"]
    for k, c in enumerate(classes):
        for i in range(per_class):
            rows.append(f"images/{c}/{i:03d}.png,{c if by_name else k}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


def write_idx_split(root: Path, n: int, split: str, seed: int = 0, name: str = "MNIST", separable: bool = False) -> Path:
    """One split of an IDX dataset; `separable` draws each class as its own brightness band, so it is learnable."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    if separable:
        base = (labels.astype(np.int32) * 25)[:, None, None]
        images = np.clip(base + rng.integers(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
    else:
        images = _images(n, 28, seed, channels=1)
    prefix = "train" if split == "train" else "t10k"
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.tobytes())
    return root
