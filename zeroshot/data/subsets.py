"""A dataset cut down to some of its classes, relabelled 0..K-1 in the kept classes' order: a language that names
only some of ImageNet's classes (Babel-ImageNet) is scored on the images of those classes alone, as
CLIP_benchmark's `babel_imagenet` keeps only them and remaps their labels.

Labels are read from the source's listing (no image is decoded); the subset's fingerprint covers the kept
images, their new labels and the kept classes, so its cached features never serve another subset.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from torch.utils.data import Dataset

from zeroshot.data.base import EvalDataset
from zeroshot.errors import DatasetError


class ClassSubset(Dataset):
    """(image, new label) for the source's images at `indices`; paths, names and fingerprint parts carried over."""

    def __init__(self, source: Dataset, indices: list[int], labels: list[int], paths: list[str] | None, kept: list[int]):
        self.source, self.indices, self.labels, self.kept = source, indices, labels, kept
        self.root = getattr(source, "root", None)
        if paths is not None:  # fingerprint.samples_of reads (path, label) pairs from here
            self.samples = [(paths[i], y) for i, y in zip(indices, labels)]
        if hasattr(source, "name_of"):
            self.name_of = lambda i: source.name_of(self.indices[i])
        if hasattr(source, "fingerprint_parts"):
            self.fingerprint_parts = lambda: [*source.fingerprint_parts(), f"classes {subset_digest(kept)}",
                                              f"images {subset_digest(indices)}"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, _ = self.source[self.indices[index]]
        return image, self.labels[index]


def subset_digest(values: list[int]) -> str:
    return hashlib.sha256(json.dumps(list(values)).encode()).hexdigest()[:16]


@dataclass
class SubsetResult:
    dataset: EvalDataset
    n_images_left_out: int


def keep_classes(dataset: EvalDataset, kept: list[int], why: str) -> SubsetResult:
    """The images of classes `kept` (old labels, in the new label order), relabelled 0..len(kept)-1."""
    labels = dataset.listed_labels()
    if labels is None:
        raise DatasetError(f"{why} needs each image's label without decoding it, and dataset {dataset.name!r} does not "
                           "list them: read it from its image folders or its CLIP_benchmark webdataset")
    new = {old: i for i, old in enumerate(kept)}
    indices = [i for i, y in enumerate(labels) if int(y) in new]
    if not indices:
        raise DatasetError(f"{why}: dataset {dataset.name!r} has no image of the {len(kept)} classes kept")
    source = ClassSubset(dataset.source, indices, [new[int(labels[i])] for i in indices], dataset.paths, kept)
    classes = [dataset.classes[k] for k in kept] if dataset.classes else None
    extra = {**(dataset._fp_extra or {}), "kept_classes": subset_digest(kept)}
    out = EvalDataset(source, classes, dataset.name, skip_bad_images=dataset.skip_bad_images, root=dataset.root,
                      fingerprint_files=dataset._fp_files, fingerprint_extra=extra)
    out.transform, out.shipped_templates = dataset.transform, dataset.shipped_templates
    return SubsetResult(out, len(dataset) - len(indices))
