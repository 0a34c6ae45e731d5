"""Image folders listed once and safely: torchvision's ImageFolder with its own listing (`make_dataset`).

torchvision's listing follows every directory symlink (os.walk(followlinks=True)), so a link pointing back up
the tree is walked about 40 levels deep and its images counted again and again under one label. Here a
directory link is followed only to a directory this walk has not entered yet (by device and inode): a link
back into the tree (a cycle) or to a directory already listed is skipped with one warning naming it, and a file
reached twice (two links, a hard link) is listed once. FIFOs, sockets and devices are never opened (opening a
FIFO blocks forever): they are refused before any image is read, naming the file, or skipped with a warning
under skip_bad_images=true. docs/trust.md says the same for users.
"""
from __future__ import annotations

import os

import torchvision.datasets as tvd

from zeroshot.data.base import special_kind
from zeroshot.errors import DatasetError
from zeroshot.log import log

class Walk:
    """One listing: the directories entered and the files listed so far, by (device, inode)."""

    def __init__(self, skip_bad: bool):
        self.skip_bad, self.dirs, self.files = skip_bad, set(), set()
        self.skipped_links: list[str] = []
        self.skipped_special: list[str] = []
        self.repeated_files = 0

    def enter(self, folder: str) -> bool:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in self.dirs:
            self.skipped_links.append(f"{folder} -> {os.path.realpath(folder)}")
            return False
        self.dirs.add((st.st_dev, st.st_ino))
        return True

    def take(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:  # a dangling link: left for the reader, which names it
            return True
        kind = special_kind(st.st_mode)
        if kind is not None:
            if not self.skip_bad:
                raise DatasetError(f"{path} is {kind}, not an image file: remove it from the image folder, or pass "
                                   "skip_bad_images=true to skip it (zeroshot never opens such files)")
            self.skipped_special.append(f"{path} ({kind})")
            return False
        if (st.st_dev, st.st_ino) in self.files:
            self.repeated_files += 1
            return False
        self.files.add((st.st_dev, st.st_ino))
        return True

    def folders_under(self, folder: str, out: list) -> list[tuple[str, list[str]]]:
        """(directory, its file names) for `folder` and every directory under it, each entered once."""
        if not self.enter(folder):
            return out
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return out
        out.append((folder, [e.name for e in entries if not e.is_dir(follow_symlinks=True)]))
        for entry in sorted((e for e in entries if e.is_dir(follow_symlinks=True)), key=lambda e: e.name):
            self.folders_under(entry.path, out)
        return out

    def files_under(self, folder: str):
        """Every file under `folder` in torchvision's order: directories by path, then file names, sorted."""
        for path, names in sorted(self.folders_under(folder, [])):
            for name in sorted(names):
                yield os.path.join(path, name)

    def report(self, root: str) -> None:
        if self.skipped_links:
            log.warning("%s: skipped %d directory link(s) leading to a directory listed already (a cycle or a "
                        "repeat; each image is listed once): %s", root, len(self.skipped_links),
                        "; ".join(self.skipped_links[:3]))
        if self.repeated_files:
            log.warning("%s: %d file(s) reached a second time through a link were listed once", root,
                        self.repeated_files)
        if self.skipped_special:
            log.warning("skipping %d special file(s) (skip_bad_images=true): %s", len(self.skipped_special),
                        "; ".join(self.skipped_special[:3]))


def list_images(directory: str, class_to_idx: dict[str, int], extensions=tvd.folder.IMG_EXTENSIONS,
                skip_bad: bool = False, allow_empty: bool = False) -> list[tuple[str, int]]:
    """torchvision's make_dataset (the same order: classes sorted, then paths sorted), listed safely."""
    walk = Walk(skip_bad)
    walk.enter(directory)  # a link inside the tree back to its root is a cycle too
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


class ImageFolder(tvd.ImageFolder):
    """torchvision's ImageFolder (classes, labels, loader) with the safe listing above."""

    def __init__(self, root: str, skip_bad: bool = False, **kwargs):
        self.skip_bad = skip_bad
        super().__init__(str(root), **kwargs)

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return list_images(directory, class_to_idx, tuple(extensions or tvd.folder.IMG_EXTENSIONS),
                           getattr(self, "skip_bad", False), allow_empty)
