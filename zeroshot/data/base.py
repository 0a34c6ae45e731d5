"""`EvalDataset`, the one wrapper every source comes back in: (image, label, index) triples, file paths where the
source has them, the fingerprint, label checks, and images that fail to decode reported (or skipped) by file
and index, also from inside DataLoader workers. The loader's side: each sample's decode cost in CPU time
(`TimedSamples`), batches that carry it (`collate` -> `Batch`), decoding workers at idle priority
(`idle_priority`), and display thumbnails made from the decode the model's input comes from
(`EvalDataset.with_thumbnails`). Also the "dataset not found" error every reader raises.
"""
from __future__ import annotations

import copy
import os
import stat
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from zeroshot.data.fingerprint import dataset_fingerprint, samples_of
from zeroshot.errors import BadImageError, DatasetError


class EvalDataset(Dataset):
    """(image tensor, label, index) triples; an unreadable image raises naming its file, or becomes None."""

    def __init__(self, source: Dataset, classes: list[str] | None, name: str, *, skip_bad_images: bool = False,
                 root: str | Path | None = None, fingerprint_files=None, fingerprint_extra: dict | None = None):
        self.source, self.classes, self.name = source, classes, name
        self.transform: Callable | None = None  # set once the model (and so its preprocessing) is known
        samples = samples_of(source)
        self.paths = [p for p, _ in samples] if samples is not None else None
        self.labels = [y for _, y in samples] if samples is not None else None  # where known without decoding
        if self.paths is None and hasattr(source, "name_of"):  # webdataset: shard:key
            self.paths = [source.name_of(i) for i in range(len(source))]
        self.skip_bad_images = skip_bad_images
        self.root, self._fp_files, self._fp_extra = root, fingerprint_files, fingerprint_extra
        self._fingerprint: dict | None = None
        self.shipped_templates: list[str] | None = None  # set by build_dataset for webdatasets
        self.decoder: str | None = None  # set by `decode_at_least` (fast_decode=true): what decodes, for the cache key
        self.thumbnail: Callable | None = None  # PIL image -> bytes: each sample also carries one (`with_thumbnails`)

    def with_thumbnails(self, make: Callable) -> "EvalDataset":
        """This dataset, its samples carrying a 4th element: `make(image)` (e.g. gallery.thumbnail_jpeg) of the
        image as the source decoded it, before the transform: the decode the model's input comes from, reused."""
        view = copy.copy(self)
        view.thumbnail = make
        return view

    def decode_at_least(self, min_size: int) -> bool:
        """Decode JPEGs at a reduced DCT scale where both sides stay >= `min_size` (`DraftLoader`), for sources that
        read files through a loader function (image folders, CSVs, the ImageNet-family folders); False for others
        (webdatasets, torchvision's own dataset classes), which keep decoding exactly."""
        if not callable(getattr(self.source, "loader", None)):
            return False
        self.source.loader = DraftLoader(min_size)
        self.decoder = repr(self.source.loader)
        return True

    def fingerprint(self) -> dict:
        """See fingerprint.dataset_fingerprint; computed once (it stats every file, and hashes declared ones)."""
        if self._fingerprint is None:
            self._fingerprint = dataset_fingerprint(self.source, self.root, self._fp_files, self._fp_extra)
        return self._fingerprint

    def __len__(self) -> int:
        return len(self.source)

    def targets(self) -> dict:
        """Per-image targets beyond the single label, read without any image: "multilabel" [N, C] multi-hot
        (VOC 2007 multi-label) and "metadata" [N, F] (WILDS and fairness groups), where the source has them."""
        return self.source.targets() if hasattr(self.source, "targets") and callable(self.source.targets) else {}

    def listed_labels(self) -> list[int] | None:
        """Every image's label where the source lists them without decoding any image, else None."""
        if self.labels is not None:
            return self.labels
        for attr in ("targets", "labels", "_labels"):
            values = getattr(self.source, attr, None)
            if isinstance(values, (list, tuple)) or hasattr(values, "tolist"):
                values = list(values.tolist() if hasattr(values, "tolist") else values)
                if len(values) == len(self) and all(isinstance(v, int) for v in values[:1]):
                    return values
        if hasattr(self.source, "samples") and hasattr(self.source, "name_of"):
            return [s.label for s in self.source.samples]
        return None

    def check_labels(self, n_classes: int) -> None:
        """Every label the source lists must be a class: an out-of-range one would surface later as a numpy
        reshape error in the metrics, naming nothing. Sources that list no labels are checked as images arrive."""
        labels = self.listed_labels()
        if not labels:
            return
        # -1: a multi-label image with no positive class (VOC); a CSV's negative labels are refused as it is read
        bad = next((i for i, y in enumerate(labels) if int(y) >= n_classes), None)
        if bad is not None:
            where = self.source.row_of(bad) if hasattr(self.source, "row_of") else self.describe(bad)
            raise DatasetError(f"{where} has label {labels[bad]}, outside the {n_classes} classes (0..{n_classes - 1}) of "
                               f"dataset {self.name!r}: fix the label, or give class names that cover it (dataset.classnames=FILE)")

    def describe(self, index: int) -> str:
        return self.paths[index] if self.paths else f"{self.name} image #{index}"

    def __getitem__(self, index: int):
        try:
            if self.paths is not None and os.path.lexists(self.paths[index]):
                refuse_special(self.paths[index])  # a FIFO listed by a CSV would block the read forever
            image, label = self.source[index]
        except DECODE_ERRORS as e:
            if self.skip_bad_images:
                return None
            # returned, not raised: inside a DataLoader worker an exception reaches the user wrapped in torch's
            # "Caught ... in DataLoader worker process 0" traceback; this way the main process raises it whole
            return BadSample(index, f"Could not read {self.describe(index)} (image #{index} of {self.name}): "
                                    f"{type(e).__name__}: {e}. Fix or remove the file, or pass skip_bad_images=true "
                                    "to skip unreadable images.")
        thumbnail = self.thumbnail(image) if self.thumbnail is not None else None
        if self.transform is not None:  # outside the try: an error in our preprocessing is a bug, never skipped
            image = self.transform(image)
        return (image, int(label), index) if thumbnail is None else (image, int(label), index, thumbnail)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str | None:
    """What a file that is not a regular file is ("a FIFO (named pipe)", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def refuse_special(path: str | os.PathLike) -> None:
    """Raise OSError (an unreadable image, named by the caller) if `path` is not a regular file; reads nothing."""
    kind = special_kind(os.stat(path).st_mode)
    if kind is not None:
        raise OSError(f"{path} is {kind}, not an image file; zeroshot never opens it")


class DraftLoader:
    """Open an image file as RGB like torchvision's loader, but let libjpeg decode a JPEG at the smallest DCT scale
    (1/2, 1/4 or 1/8: PIL's `draft`) that keeps both sides at least `min_size`, so a JPEG at least twice the model's
    input on both sides skips most of the inverse DCT and upsampling. The pixels differ from the exact decode (the
    scaled IDCT averages, where the exact path resizes with the transform's filter): fast_decode=true, an opt-in;
    other formats and smaller JPEGs decode exactly."""

    def __init__(self, min_size: int):
        self.min_size = int(min_size)

    def __call__(self, path):
        with open(path, "rb") as f:
            image = Image.open(f)
            if image.format == "JPEG":
                image.draft(image.mode, (self.min_size, self.min_size))
            return image.convert("RGB")

    def __repr__(self) -> str:
        return f"DraftLoader(min_size={self.min_size}, JPEG DCT scaling)"


# What an unreadable image raises: a missing or unreadable file, a format PIL does not know (UnidentifiedImageError
# is an OSError), a truncated file or shard, broken chunks (SyntaxError, zlib.error), an image over PIL's size limit.
DECODE_ERRORS = (OSError, EOFError, SyntaxError, zlib.error, Image.DecompressionBombError)


@dataclass
class BadSample:
    """An image that could not be read, carried out of the DataLoader worker to be reported by the main process."""

    index: int
    message: str


class TimedSamples(Dataset):
    """The dataset as the DataLoader reads it: each sample with the CPU time its read, decode and transform took,
    in the thread that did them (`time.thread_time`, so time the worker spends preempted does not count)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        start = time.thread_time()
        sample = self.dataset[index]
        return sample, time.thread_time() - start


class Batch(NamedTuple):
    images: torch.Tensor  # [B, 3, H, W], the readable samples
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: int  # unreadable samples skipped (skip_bad_images=true)
    decode_cpu_s: float  # summed CPU seconds of reading, decoding and transforming the batch's samples
    samples: int  # how many samples that time covers (readable or not)
    scheduler: str  # the scheduling of the process that decoded it (`scheduling`)
    thumbnails: dict  # dataset index -> thumbnail, where the dataset makes them (`with_thumbnails`)


def collate(batch: list) -> Batch | BadSample:
    """Stack the readable samples of (sample, CPU seconds) pairs (`TimedSamples`); also say how many were skipped
    as unreadable, what decoding them cost and how the decoding process was scheduled.

    An unreadable image that is not to be skipped is raised in the main process when workers are used: collate
    runs in the worker, but the BadSample travels as data and `check_batch` raises it."""
    samples = [s for s, _ in batch]
    bad = [b for b in samples if isinstance(b, BadSample)]
    if bad:
        return bad[0]
    good = [b for b in samples if b is not None]
    skipped, cost, where = len(batch) - len(good), float(sum(t for _, t in batch)), scheduling()
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped, cost,
                     len(batch), where, {})
    images, labels, indices, *thumbnails = zip(*good)
    return Batch(torch.stack(images), torch.tensor(labels), torch.tensor(indices), skipped, cost, len(batch), where,
                 dict(zip(indices, thumbnails[0])) if thumbnails else {})


def check_batch(batch) -> Batch:
    """A collated batch, or the BadImageError its first unreadable image calls for."""
    if isinstance(batch, BadSample):
        raise BadImageError(batch.message)
    return batch


def class_dirs(folder: Path) -> list[str]:
    """The subfolders of a class-per-folder dataset, sorted by name."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's cpuset), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def idle_priority(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: this worker runs only on cores nothing else wants (Linux SCHED_IDLE; elsewhere
    nice 19). The model's threads then keep every core they use, and decoding fills the time they leave idle,
    rather than one preempting the other mid-batch."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def scheduling() -> str:
    """How the process running this is scheduled: "main process" outside a DataLoader worker, else "idle"
    (SCHED_IDLE), "normal" (SCHED_OTHER, nice 0), or the policy's name with its nice value."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return "main process"
    try:
        policy, nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return "unknown"
    if policy == getattr(os, "SCHED_IDLE", None):
        return "idle"
    names = {getattr(os, k): k.removeprefix("SCHED_").lower() for k in ("SCHED_OTHER", "SCHED_BATCH") if hasattr(os, k)}
    name = names.get(policy, f"policy {policy}")
    return "normal" if name == "other" and nice == 0 else f"{name}, nice {nice}"


def sentence(text: str) -> str:
    """`text` as a sentence: a capital first letter and one full stop at the end."""
    text = " ".join(str(text).split()).rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def missing_data(cfg, root: Path, why: str, url: str | None = None) -> DatasetError:
    """Sentences: what is missing and why, the layout expected, what works offline, and last what to do."""
    layout = cfg.get("layout") or "see torchvision's documentation of this dataset"
    offline = ("To evaluate images you already have, offline: dataset=imagefolder dataset.root=/path/to/images "
               "(one folder per class).")
    if cfg.get("hub"):
        offline += (f" Its CLIP_benchmark webdataset works too, from a local copy (dataset.root=DIR) or, online, "
                    f"dataset.root=hf-hub:{cfg.hub}.")
    if cfg.get("download") and ("urlopen" in why or "URLError" in why or "Error downloading" in why):
        fix = (f"The download{f' of {url}' if url else ''} failed (is this machine offline?). Fetch the files on a "
               "machine with internet and put them under that path, or set dataset.root=PATH to where they are.")
    elif cfg.downloadable:
        fix = "Set dataset.root=PATH to where it is, or dataset.download=true to fetch it."
    else:
        fix = "Set dataset.root=PATH to where it is."
    return DatasetError(f"Dataset {cfg.name!r} ({cfg.get('split')} split) was not found under {root}: "
                        f"{' '.join(str(why).split()).rstrip('.')}. Expected layout: {sentence(layout)} {offline} {fix}")
