"""ImageNet and its distribution shifts, each read from its original layout (webdatasets go through wds.py).

The label traps live here, so each reader checks the folder set before anything is encoded:
- ImageNet val: torchvision's layout (meta.bin + val/<wnid>) or 1000 wnid folders.
- ImageNet-V2: folders "0" ... "999", and folder k is class k. A string sort would put "10" before "2".
- ImageNet-Sketch: 1000 wnid folders (`sketch/<wnid>/`).
- ImageNet-A, -R, -O: 200 wnid folders each; the classifier covers those 200 classes, in sorted-wnid order,
  with the subsets as data (zeroshot/reference/imagenet_wnids.json).
- ObjectNet: 113 of its classes map onto ImageNet (its mappings/objectnet_to_imagenet_1k.json); images of
  the other folders are left out, labels follow the sorted folder names, class names are ObjectNet's, and
  the 1-pixel red border every image carries is cropped (`border_crop`, pixels per side).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from torch.utils.data import Dataset

from zeroshot.data.base import class_dirs, missing_data
from zeroshot.errors import DatasetError
from zeroshot.files import read_json
from zeroshot.paths import REFERENCE

WNIDS = REFERENCE / "imagenet_wnids.json"
IMAGENET_CLASSES = 1000


@functools.lru_cache()
def wnid_lists() -> dict[str, list[str]]:
    return json.loads(WNIDS.read_text())


def subset_positions(subset: str) -> list[int]:
    """Where a shift's classes sit among ImageNet's 1000, in the shift's label order (its sorted wnids).

    This is how ImageNet's prompt sets, or a user's own 1000-name file, apply to ImageNet-A, -R and -O: the
    class names are ImageNet's, picked at these positions, so a change to ImageNet's names reaches every shift."""
    lists = wnid_lists()
    where = {w: i for i, w in enumerate(lists["imagenet"])}
    return [where[w] for w in sorted(lists[subset])]


def _folder(cfg, candidates: list[str]) -> Path:
    root = Path(cfg.root).expanduser()
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    raise missing_data(cfg, root, "no such directory" if not root.exists() else f"none of {', '.join(c or '.' for c in candidates)} "
                   "holds the class folders")


def _check_folders(cfg, folder: Path, found: list[str], expected: list[str]) -> None:
    if found != sorted(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise missing_data(cfg, folder, f"found {len(found)} class folders, expected {len(expected)}"
                       f"{f'; missing {len(missing)} (e.g. {missing[:3]})' if missing else ''}"
                       f"{f'; unexpected {len(extra)} (e.g. {extra[:3]})' if extra else ''}")


def _imagenet(cfg) -> tuple[Dataset, list[str] | None]:
    root = Path(cfg.root).expanduser()
    split = {"test": "val", "val": "val", "train": "train"}.get(cfg.split)
    if split is None:
        raise DatasetError(f"Dataset 'imagenet' has no split {cfg.split!r}. Available splits: test (= val), val, train")
    if (root / "meta.bin").is_file() or (root / "ILSVRC2012_devkit_t12.tar.gz").is_file():
        import torchvision.datasets as tvd

        try:
            return tvd.ImageNet(str(root), split=split), None
        except (RuntimeError, FileNotFoundError) as e:
            raise missing_data(cfg, root, str(e)) from e
    return _wnid_folders(cfg, [split, ""])


def _wnid_folders(cfg, candidates: list[str] | None = None) -> tuple[Dataset, None]:
    """Class folders named by wnid: ImageNet's 1000, or a subset's 200 (`subset: imagenet_a`)."""
    folder = _folder(cfg, candidates or list(cfg.get("folders") or [""]))
    expected = wnid_lists()[cfg.get("subset") or "imagenet"]
    _check_folders(cfg, folder, class_dirs(folder), expected)
    from zeroshot.data.listing import ImageFolder

    return ImageFolder(str(folder), skip_bad=bool(cfg.get("skip_bad_images"))), None  # sorted wnids: label k is the subset's k-th class


def _imagenetv2(cfg) -> tuple[Dataset, None]:
    from zeroshot.data.imagenet_folders import NumberedFolders

    folder = _folder(cfg, list(cfg.get("folders") or [""]))
    found = class_dirs(folder)
    _check_folders(cfg, folder, sorted(found, key=str), [str(k) for k in range(int(cfg.num_classes))])
    return NumberedFolders(str(folder), skip_bad=bool(cfg.get("skip_bad_images"))), None


def _objectnet(cfg) -> tuple[Dataset, list[str]]:
    root = Path(cfg.root).expanduser()
    base = root / "objectnet-1.0" if (root / "objectnet-1.0").is_dir() else root
    mappings = base / "mappings"
    needed = [mappings / "folder_to_objectnet_label.json", mappings / "objectnet_to_imagenet_1k.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing or not (base / "images").is_dir():
        raise missing_data(cfg, root, f"missing {', '.join(missing) or base / 'images'}")
    folder_to_label = read_json(needed[0])
    overlapping = read_json(needed[1])  # ObjectNet label -> "imagenet name; imagenet name"
    folders = sorted(f for f, label in folder_to_label.items() if label in overlapping)
    present = set(class_dirs(base / "images"))
    absent = [f for f in folders if f not in present]
    if absent:
        raise missing_data(cfg, base / "images", f"{len(absent)} of the {len(folders)} mapped class folders are missing "
                       f"(e.g. {absent[:3]})")
    from zeroshot.data.imagenet_folders import ObjectNetFolders

    ds = ObjectNetFolders(base / "images", folders, int(cfg.border_crop), skip_bad=bool(cfg.get("skip_bad_images")))
    return ds, [folder_to_label[f].lower() for f in folders]


KINDS = {"imagenet": _imagenet, "wnid_folders": _wnid_folders, "imagenetv2": _imagenetv2, "objectnet": _objectnet}
