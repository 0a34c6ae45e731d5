"""The two ImageNet-family readers that are torchvision ImageFolders with their own class lists (data/imagenet.py
picks them); a module of their own so that importing imagenet.py, for its class tables, imports no torchvision.
"""
from __future__ import annotations

from pathlib import Path

from zeroshot.data.base import class_dirs
from zeroshot.data.listing import ImageFolder, list_images


class NumberedFolders(ImageFolder):
    """ImageNet-V2: the folder named k holds class k (ImageFolder alone would sort the names as strings)."""

    def find_classes(self, directory):
        names = class_dirs(Path(directory))
        return names, {n: int(n) for n in names}


class ObjectNetFolders(ImageFolder):
    """ObjectNet's 113 ImageNet-overlapping classes; images lose `border` pixels on each side."""

    def __init__(self, images: Path, folders: list[str], border: int, skip_bad: bool = False):
        self.keep, self.border = folders, border
        super().__init__(str(images), skip_bad=skip_bad)

    def find_classes(self, directory):
        return self.keep, {f: i for i, f in enumerate(self.keep)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return list_images(directory, class_to_idx, skip_bad=self.skip_bad, allow_empty=True)

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        b = self.border
        if b:
            w, h = image.size
            image = image.crop((b, b, w - b, h - b))
        return image, label
