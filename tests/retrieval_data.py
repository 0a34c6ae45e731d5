"""Writers for image-caption datasets in their real layouts: CLIP_benchmark's retrieval webdataset (by its own
converter) and Karpathy's JSON split file beside the image folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_captioned_images(folder: Path, captions: list[list[str]], seed: int = 0, size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(len(captions)):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class _Pairs:
    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]


def write_retrieval_wds(out: Path, paths: list[Path], captions: list[list[str]], max_count: int = 5) -> Path:
    """clip_benchmark.webdataset_builder.convert_retrieval_dataset, image files copied as they are."""
    import clip_benchmark.webdataset_builder as builder  # a declared test dependency (clip-benchmark)
    builder.convert_retrieval_dataset(_Pairs([(str(p), c) for p, c in zip(paths, captions)]), "test", str(out),
                                      transform=builder.path_to_bytes, max_count=max_count, verbose=False)
    return out


def write_karpathy(root: Path, images: str, paths: list[Path], captions: list[list[str]], extra_train: int = 2,
                   name: str = "dataset_flickr30k.json") -> Path:
    """Karpathy's split file: the test images in order, plus a few train entries the reader must leave out."""
    entries = [{"filename": p.name, "split": "test", "imgid": i, "sentences": [{"raw": c, "tokens": c.split()} for c in caps]}
               for i, (p, caps) in enumerate(zip(paths, captions))]
    entries[1:1] = [{"filename": f"train_{j}.jpg", "split": "train", "sentences": [{"raw": "a train image"}]}
                    for j in range(extra_train)]
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    return root
