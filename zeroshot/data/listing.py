"""Image folders listed once and safely: torchvision's ImageFolder (the same classes, samples, order, extensions
and loader), written here so that an image-folder or CSV eval imports no torchvision (1-2.6 s of start-up: its
`__init__` imports its models, ops and torch._dynamo). tests/test_datasets.py and tests/test_trust.py compare
the listing with torchvision's, file for file.

torchvision's listing follows every directory symlink (os.walk(followlinks=True)), so a link pointing back up
the tree is walked about 40 levels deep and its images counted again and again under one label. Here a link
(to a directory or a file) whose target lies inside the folder is not followed: a cycle, or images the walk
lists on their own anyway. Such links are skipped with one warning naming them; links leading out of the
folder (class folders on other disks) are followed, each directory entered once (by device and inode). Class
folders themselves may be links. Hard links are separate files, counted as such. FIFOs, sockets and devices are never opened (opening a
FIFO blocks forever): they are refused before any image is read, naming the file, or skipped with a warning
under skip_bad_images=true. docs/trust.md says the same for users.
"""
from __future__ import annotations

import os
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from zeroshot.data.base import special_kind
from zeroshot.errors import DatasetError
from zeroshot.log import log

# The file endings an image folder lists (lower-cased names), as torchvision 0.2x's IMG_EXTENSIONS has them.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_rgb(path) -> Image.Image:
    """An image file as torchvision's default (PIL) loader reads it: opened through a file object that is closed
    afterwards, then converted to RGB (which decodes it)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class Walk:
    """One listing of the tree under `root`: the directories entered (by device and inode, against cycles through
    links that lead out of the tree and back), and what was skipped, for one warning each."""

    def __init__(self, root: str, skip_bad: bool):
        self.root, self.skip_bad, self.dirs = os.path.realpath(root), skip_bad, set()
        self.skipped_links: list[str] = []
        self.skipped_files: list[str] = []
        self.skipped_special: list[str] = []

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def enter(self, folder: str) -> bool:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in self.dirs:
            self.skipped_links.append(f"{folder} -> {os.path.realpath(folder)}")
            return False
        self.dirs.add((st.st_dev, st.st_ino))
        return True

    def take(self, path: str) -> bool:
        """False for a special file under skip_bad_images (a DatasetError without it); reads nothing."""
        try:
            st = os.stat(path)
        except OSError:  # a dangling link: left for the reader, which names it
            return True
        kind = special_kind(st.st_mode)
        if kind is None:
            return True
        if not self.skip_bad:
            raise DatasetError(f"{path} is {kind}, not an image file: remove it from the image folder, or pass "
                               "skip_bad_images=true to skip it (zeroshot never opens such files)")
        self.skipped_special.append(f"{path} ({kind})")
        return False

    def linked_back(self, entry: os.DirEntry, skipped: list[str]) -> bool:
        """A link whose target lies in the tree: that target is listed on its own (or deliberately not)."""
        if not entry.is_symlink():
            return False
        target = os.path.realpath(entry.path)
        if self.inside(target):
            skipped.append(f"{entry.path} -> {target}")
            return True
        return False

    def folders_under(self, folder: str, out: list) -> list[tuple[str, list[str]]]:
        """(directory, its file names) for `folder` and every directory under it, each entered once."""
        if not self.enter(folder):
            return out
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return out
        dirs = sorted((e for e in entries if e.is_dir(follow_symlinks=True)), key=lambda e: e.name)
        files = [e for e in entries if not e.is_dir(follow_symlinks=True)]
        out.append((folder, [e.name for e in files if not self.linked_back(e, self.skipped_files)]))
        for entry in dirs:
            if not self.linked_back(entry, self.skipped_links):
                self.folders_under(entry.path, out)
        return out

    def files_under(self, folder: str):
        """Every file under `folder` in torchvision's order: directories by path, then file names, sorted."""
        for path, names in sorted(self.folders_under(folder, [])):
            for name in sorted(names):
                yield os.path.join(path, name)

    def report(self, root: str) -> None:
        if self.skipped_links:
            log.warning("%s: skipped %d directory link(s) back into the folder (a cycle, or images listed already; "
                        "each image is listed once): %s", root, len(self.skipped_links), "; ".join(self.skipped_links[:3]))
        if self.skipped_files:
            log.warning("%s: skipped %d file link(s) to files in the folder (each file is listed once): %s", root,
                        len(self.skipped_files), "; ".join(self.skipped_files[:3]))
        if self.skipped_special:
            log.warning("skipping %d special file(s) (skip_bad_images=true): %s", len(self.skipped_special),
                        "; ".join(self.skipped_special[:3]))


def list_images(directory: str, class_to_idx: dict[str, int], extensions=IMG_EXTENSIONS,
                skip_bad: bool = False, allow_empty: bool = False) -> list[tuple[str, int]]:
    """torchvision's make_dataset (the same order: classes sorted, then paths sorted), listed safely."""
    walk = Walk(directory, skip_bad)
    out, empty = [], []
    for name in sorted(class_to_idx, key=lambda c: class_to_idx[c]):
        folder = os.path.join(directory, name)
        if not os.path.isdir(folder):
            continue
        n = len(out)
        for path in walk.files_under(folder):
            if path.lower().endswith(tuple(extensions)) and walk.take(path):
                out.append((path, class_to_idx[name]))
        if len(out) == n:
            empty.append(name)
    walk.report(directory)
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(sorted(empty))}. "
                                f"Supported extensions are: {', '.join(extensions)}")
    return out


def find_classes(directory: str) -> tuple[list[str], dict[str, int]]:
    """The class folders of an image folder: its sub-directories (links to directories too), sorted by name."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    return classes, {name: i for i, name in enumerate(classes)}


class ImageFolder(Dataset):
    """torchvision's ImageFolder (classes, class_to_idx, samples, targets, loader; `find_classes` and
    `make_dataset` to override) with the safe listing above. (image, label) as the loader reads the file."""

    def __init__(self, root: str, skip_bad: bool = False, transform: Callable | None = None,
                 target_transform: Callable | None = None, loader: Callable = load_rgb, allow_empty: bool = False):
        self.skip_bad = skip_bad
        self.root = os.path.expanduser(str(root))
        self.transform, self.target_transform, self.loader = transform, target_transform, loader
        self.extensions = IMG_EXTENSIONS
        self.classes, self.class_to_idx = self.find_classes(self.root)
        self.samples = self.make_dataset(self.root, self.class_to_idx, IMG_EXTENSIONS, allow_empty=allow_empty)
        self.targets = [label for _, label in self.samples]
        self.imgs = self.samples

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return find_classes(directory)

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return list_images(directory, class_to_idx, tuple(extensions or IMG_EXTENSIONS),
                           getattr(self, "skip_bad", False), allow_empty)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = self.loader(path)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
