"""Datasets by config: torchvision's real dataset classes, image folders, CSV files, CLIP_benchmark's webdatasets
(data/wds.py) and the ImageNet family (data/imagenet.py). `configs/dataset/*.yaml` is the registry and
`build_dataset` the one entry point: it checks the data before any model is loaded.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from zeroshot.data.base import EvalDataset, missing_data, sentence
from zeroshot.data.pickles import safe_pickles
from zeroshot.errors import DatasetError
from zeroshot.files import atomic_write, read_text
from zeroshot.log import log
from zeroshot.prompts.sets import read_classnames


def _idx_class(cls: type, root: Path, train: bool) -> tuple[type, Path]:
    """MNIST-family datasets with two relaxations of torchvision's reader, which still does the reading:
    only the requested split's files must exist (torchvision insists on both), and IDX files lying flat
    in `root`, gzipped or not, are found as well as `<root>/<Class>/raw/`.
    """
    import gzip
    import shutil
    import zlib

    needed = [Path(url).stem for url, _ in cls.resources if ("train" in url) == train]
    raw = root / cls.__name__ / "raw"
    if not all((raw / n).is_file() for n in needed) and not os.access(root, os.W_OK):
        # a read-only data folder: unpack into the cache instead
        from zeroshot.paths import default_cache_dir

        root = default_cache_dir() / "datasets" / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        raw, source = root / cls.__name__ / "raw", raw.parent.parent
    else:
        source = root
    for name in needed:
        if (raw / name).is_file():
            continue
        for candidate in (source / cls.__name__ / "raw" / f"{name}.gz", source / name, source / f"{name}.gz"):
            if candidate.is_file():
                opener = gzip.open if candidate.suffix == ".gz" else open
                try:
                    with opener(candidate, "rb") as src, atomic_write(raw / name) as dst:
                        shutil.copyfileobj(src, dst)
                except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # a truncated or garbled .gz
                    raise DatasetError(f"{candidate} is damaged ({type(e).__name__}: {e}); download it again") from None
                break

    def _check_exists(self) -> bool:
        return all((Path(self.raw_folder) / name).is_file() for name in needed)

    return type(cls.__name__, (cls,), {"_check_exists": _check_exists}), root


def _torchvision(cfg) -> tuple[Dataset, list[str] | None]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cfg.target)
    split = cfg.split
    splits = cfg.get("splits") or {}
    if split not in splits:
        raise DatasetError(f"Dataset {cfg.name!r} has no split {split!r}. Available splits: {', '.join(splits)}")
    kwargs = dict(splits[split] or {})
    kwargs.update(cfg.get("kwargs") or {})
    if cfg.get("target_offset"):  # e.g. CLEVR counts 3..10 are VTAB's labels 0..7
        import functools
        import operator

        kwargs["target_transform"] = functools.partial(operator.add, int(cfg.target_offset))
    root = Path(cfg.root).expanduser()
    if issubclass(cls, tvd.MNIST) and root.is_dir():
        cls, root = _idx_class(cls, root, kwargs.get("train", False))
    created = _first_missing(root)  # a failed download must not leave empty folders behind
    try:
        with safe_pickles():  # CIFAR's batches are pickles: data only, never code
            ds = cls(root=str(root), download=bool(cfg.download), **kwargs)
    except DatasetError:
        raise
    except (RuntimeError, FileNotFoundError, OSError) as e:
        if created is not None:
            _remove_empty(created)
        raise missing_data(cfg, root, f"{type(e).__name__}: {e}", getattr(cls, "url", None)) from e
    except (EOFError, ValueError, IndexError, KeyError, pickle.UnpicklingError) as e:  # files there, but damaged
        raise DatasetError(f"Dataset {cfg.name!r} under {root} cannot be read: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'truncated file'}. Its files are damaged or not "
                           "what torchvision expects: download them again") from None
    classes = getattr(ds, "classes", None) or getattr(ds, "categories", None)
    return ds, list(classes) if classes else None


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what a download would create), or None."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_empty(top: Path) -> None:
    """Remove `top` and the folders under it that are empty (bottom up); anything with a file in it stays."""
    if not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [top]:
        try:
            folder.rmdir()
        except OSError:  # not empty: a partial download, kept for the user to see
            pass


def _imagefolder(cfg, root: Path | None = None) -> tuple[Dataset, list[str]]:
    root = Path(root or cfg.root).expanduser()
    if not root.is_dir():
        raise missing_data(cfg, root, "no such directory")
    from zeroshot.data.listing import ImageFolder

    try:
        ds = ImageFolder(str(root), skip_bad=bool(cfg.get("skip_bad_images")))
    except DatasetError:  # a special file, named already
        raise
    except (FileNotFoundError, RuntimeError) as e:
        raise missing_data(cfg, root, str(e)) from e
    return ds, list(ds.classes)


def default_loader(path: str):
    """torchvision's image loader (PIL, RGB), as data/listing.py has it: a CSV eval imports no torchvision."""
    from zeroshot.data.listing import load_rgb

    return load_rgb(path)


class CSVDataset(Dataset):
    """(PIL image, label) from a list of paths, with torchvision's image loader."""

    def __init__(self, paths: list[str], labels: list[int], csv: Path | None = None):
        self.samples = list(zip(paths, labels))
        self.loader = default_loader
        self.csv = csv

    def row_of(self, index: int) -> str:
        return f"row {index + 2} of {self.csv} (line {index + 2}, after the header)" if self.csv else f"image #{index}"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.loader(path), label


def _csv(cfg) -> tuple[Dataset, list[str] | None]:
    import pandas as pd

    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise missing_data(cfg, path, "no such CSV file")
    import io

    try:
        table = pd.read_csv(io.StringIO(read_text(path, f"CSV {path}")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DatasetError(f"CSV {path} cannot be parsed: {str(e).strip().splitlines()[0]}") from None
    cols = [cfg.path_column, cfg.label_column]
    for col in cols:
        if col not in table.columns:
            raise DatasetError(f"CSV {path} has no column {col!r}. Its columns: {', '.join(table.columns)}")
    base = Path(cfg.get("root") or path.parent).expanduser()
    paths = [str(p if Path(p).is_absolute() else base / p) for p in table[cols[0]]]
    raw = table[cols[1]].tolist()
    classes = read_classnames(cfg.classnames) if cfg.get("classnames") else None
    if all(isinstance(x, (int,)) or str(x).lstrip("-").isdigit() for x in raw):
        labels = [int(x) for x in raw]
        negative = next((i for i, y in enumerate(labels) if y < 0), None)
        if negative is not None:
            raise DatasetError(f"row {negative + 2} of CSV {path} has label {labels[negative]}: labels are class indices "
                               "from 0, or class names")
    else:  # labels are names: index them by the class-names file, else alphabetically
        classes = classes or sorted({str(x) for x in raw})
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(x) for x in raw} - set(index))
        if unknown:
            raise DatasetError(f"CSV {path} has labels not in the class-names file {cfg.classnames}: {unknown[:10]}")
        labels = [index[str(x)] for x in raw]
    return CSVDataset(paths, labels, path), classes


def _wds(cfg) -> tuple[Dataset, list[str] | None]:
    from zeroshot.data.wds import WebDataset

    root = str(cfg.root)
    if not root.startswith("hf-hub:") and not Path(root).expanduser().exists():
        if cfg.get("hub") and cfg.get("download"):
            root = f"hf-hub:{cfg.hub}"
        else:
            fix = (f" or, with a network, dataset.root=hf-hub:{cfg.hub} (or dataset.download=true) to fetch it"
                   if cfg.get("hub") else "")
            raise DatasetError(f"Dataset {cfg.name!r} ({cfg.get('split')} split) was not found under {root}: no "
                               f"such folder. Expected layout: {sentence(cfg.get('layout') or 'a CLIP_benchmark webdataset')} "
                               f"Set dataset.root=DIR to a local copy{fix}.")
    ds = WebDataset(root, cfg.split, bool(cfg.skip_bad_images))
    for problem in ds.problems:
        log.warning("skipping: %s", problem)
    return ds, ds.classes


def _hf(cfg) -> tuple[Dataset, list[str] | None]:
    """dataset=hf, or a named dataset from its Hugging Face Parquet copy (the columns its `hf` entry names)."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise DatasetError('dataset=hf reads Parquet and Arrow files with pyarrow: pip install "zeroshot[hf]"')
    from zeroshot.data.hf import HFDataset

    classnames = read_classnames(cfg.classnames) if cfg.get("classnames") else None
    columns = cfg if cfg.kind == "hf" else cfg.hf
    ds = HFDataset(cfg.root, cfg.split, columns.image_column, columns.label_column, classnames)
    return ds, ds.classes


_KINDS = {"torchvision": _torchvision, "imagefolder": _imagefolder, "csv": _csv, "wds": _wds, "hf": _hf}


def check_task(cfg) -> None:
    """A retrieval or selection set is no classification set: say which command reads it."""
    if cfg.get("task") == "retrieval":  # images with captions, not classes: data/retrieval.py reads them
        from zeroshot.data.retrieval import retrieval_datasets

        raise DatasetError(f"Dataset {cfg.name!r} is an image-text retrieval set, not a classification one: run "
                           f"`zeroshot retrieval dataset={cfg.name}` (retrieval sets: {', '.join(retrieval_datasets())})")
    if cfg.get("task") == "compositionality":  # images with candidate captions: data/compositionality.py reads them
        raise DatasetError(f"Dataset {cfg.name!r} is an image-caption selection set, not a classification one: run "
                           f"`zeroshot compositionality dataset={cfg.name}`")


def fingerprint_inputs(cfg, kind: str, source, classes: list[str] | None) -> tuple:
    """What the dataset fingerprint hashes besides the images: (root, file patterns under it, extra facts)."""
    patterns = cfg.get("fingerprint_files") or []
    if hasattr(patterns, "keys"):  # per split
        patterns = patterns.get(cfg.split) or []
    patterns = list(patterns)
    extra = {"split": cfg.split}
    root = getattr(source, "root", None) or cfg.get("root")
    if cfg.kind == "csv":  # the CSV is the annotation file; which columns are read changes the labels
        patterns.append(str(Path(cfg.path).expanduser().resolve()))
        extra.update(path_column=cfg.path_column, label_column=cfg.label_column,
                     classnames=classes)
        root = cfg.get("root") or Path(cfg.path).expanduser().resolve().parent
    if kind == "hf":  # the files' content hashes, and which columns (and names) make the labels
        import glob

        columns = cfg if cfg.kind == "hf" else cfg.hf
        patterns = [glob.escape(source.relative(i)) for i in range(len(source.files))]
        extra.update(image_column=columns.image_column, label_column=columns.label_column, classnames=classes)
    return root, patterns, extra


def build_dataset(cfg, transform: Callable | None = None, skip_bad_images: bool = False) -> EvalDataset:
    """Build the dataset a `configs/dataset/*.yaml` describes; raise DatasetError if it is missing or empty.

    The source yields PIL images; `EvalDataset` applies `transform` (which can be set later), so that a
    dataset can be checked before the model, and its resolution, is loaded.
    """
    from omegaconf import open_dict

    from zeroshot.data.imagenet import KINDS as IMAGENET_KINDS
    from zeroshot.data.wds import is_wds

    kinds = {**_KINDS, **IMAGENET_KINDS}
    check_task(cfg)
    if cfg.kind not in kinds:
        raise DatasetError(f"Dataset {cfg.name!r} has unknown kind {cfg.kind!r}. Kinds: {', '.join(kinds)}")
    kind = cfg.kind
    root = str(cfg.get("root") or "")
    if (kind != "torchvision" and cfg.get("hub") and cfg.get("download") and root and not root.startswith("hf-hub:")
            and not Path(root).expanduser().exists()):
        with open_dict(cfg):  # not on disk: its CLIP_benchmark webdataset, through the Hugging Face cache
            cfg.root = f"hf-hub:{cfg.hub}"
    if kind != "hf" and cfg.get("hf") and root.startswith("hf-hub:") and root[7:].split("@")[0] == cfg.hf.repo:
        kind = "hf"  # a named dataset from its Hugging Face Parquet copy (its `hf` entry)
    if kind not in ("wds", "hf") and cfg.get("root") and is_wds(cfg.root, cfg.split):
        kind = "wds"  # any named dataset also reads from its CLIP_benchmark webdataset
    with open_dict(cfg):
        cfg.skip_bad_images = skip_bad_images
    source, classes = kinds[kind](cfg)
    expected = cfg.get("num_classes")
    if kind in ("wds", "hf") and cfg.kind != kind and expected and classes and len(classes) != expected:
        where = "classnames.txt" if kind == "wds" else "its ClassLabel"
        raise DatasetError(f"{cfg.root} holds {len(classes)} classes ({where}) but dataset {cfg.name!r} has "
                           f"{expected}: it is another dataset's copy")
    if len(source) == 0:
        raise DatasetError(f"Dataset {cfg.name!r} under {cfg.get('root') or cfg.get('path')} has no images.")
    root, patterns, extra = fingerprint_inputs(cfg, kind, source, classes)
    ds = EvalDataset(source, classes, cfg.name, skip_bad_images=skip_bad_images, root=root, fingerprint_files=patterns,
                     fingerprint_extra=extra)
    ds.transform = transform
    # a webdataset ships its class names (fixing its label order) and templates; other sources ship none
    ds.shipped_templates = (getattr(source, "templates", None) or []) if kind == "wds" else None
    return ds
