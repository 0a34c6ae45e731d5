"""CLIP_benchmark's webdataset layout, the format its benchmark sets are published in on the Hugging Face Hub
(clip-benchmark/wds_<name>, djghosh/wds_<name>_test):

    <root>/classnames.txt                              one class name per line, in label order
    <root>/zeroshot_classification_templates.txt       one template per line, "{c}" where the name goes
    <root>/<split>/nshards.txt                         the number of shards N
    <root>/<split>/0.tar ... <N-1>.tar                 samples s%07d.{webp,png,jpg} with .cls (an integer label)
                                                       or .npy (a multi-hot label; beside a .cls it is metadata)

Shards are read in place with the standard `tarfile` module, never unpacked: one pass over each shard's
headers indexes the samples (reading only the tiny .cls/.npy members), and images are then read by offset,
so any sample can be fetched by any DataLoader worker, batches of a shard spread over the workers, and the
feature cache chunks, resumes and shards across ranks in sample order like any other dataset.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zeroshot.errors import DatasetError
from zeroshot.files import read_text
from zeroshot.paths import HF_PREFIX

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
CLASSNAMES, TEMPLATES = "classnames.txt", "zeroshot_classification_templates.txt"


@dataclass
class Sample:
    shard: int
    key: str
    offset: int  # of the image bytes in the shard file
    size: int
    label: int
    multilabel: np.ndarray | None = None
    meta: np.ndarray | None = None


def fetch_from_hub(spec: str, split: str, metadata: tuple[str, ...] = (CLASSNAMES, TEMPLATES),
                   required: tuple[str, ...] = (CLASSNAMES,)) -> Path:
    """A local copy of a webdataset hub repo's split, file by file through huggingface_hub (its cache, HF_ENDPOINT,
    HF_HUB_OFFLINE): the `metadata` text files, <split>/nshards.txt, then the shards it names. Other splits stay
    remote. Retrieval sets carry dataset_type.txt in place of the class names and templates."""
    from huggingface_hub import errors, hf_hub_download

    repo, _, revision = spec[len(HF_PREFIX):].partition("@")
    offline_fix = (f"On a machine with internet run `hf download {repo} --repo-type dataset --include '{split}/*' '*.txt' "
                   "--local-dir DIR`, copy DIR here and set dataset.root=DIR.")

    def get(name: str, required: bool = True) -> Path | None:
        try:
            return Path(hf_hub_download(repo, name, repo_type="dataset", revision=revision or None))
        except errors.LocalEntryNotFoundError:
            raise DatasetError(f"{spec}: {name} is not in the Hugging Face cache and the Hub cannot be reached "
                               f"(offline or HF_HUB_OFFLINE=1). {offline_fix}") from None
        except errors.EntryNotFoundError:
            return None
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
            raise DatasetError(f"{spec}: the Hub has no dataset repository {repo!r}{f' at {revision!r}' if revision else ''} "
                               f"({type(e).__name__}); CLIP_benchmark's are clip-benchmark/wds_<name>.") from None

    found = {name: get(name) for name in (*metadata, f"{split}/nshards.txt")}
    if any(found[name] is None for name in (*required, f"{split}/nshards.txt")):
        have = [n for n, p in found.items() if p is not None]
        raise DatasetError(f"{spec} is not in CLIP_benchmark's webdataset layout: it has {', '.join(have) or 'none'} of "
                           f"{', '.join(found)} (a split is <split>/nshards.txt with shards 0.tar ... N-1.tar)")
    n = shard_count(found[f"{split}/nshards.txt"])
    for i in range(n):
        if get(f"{split}/{i}.tar") is None:
            raise DatasetError(f"{spec}: {split}/nshards.txt says {n} shards but {split}/{i}.tar is not in the repo")
    return found[f"{split}/nshards.txt"].parent.parent  # the snapshot folder: the same layout as a local copy


def is_wds(root: str | Path, split: str) -> bool:
    root = str(root)
    return root.startswith(HF_PREFIX) or (Path(root).expanduser() / split / "nshards.txt").is_file()


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def split_folder(root: Path, split: str) -> Path:
    """`<root>/<split>`, which must hold nshards.txt (CLIP_benchmark's layout), or an error saying what is there."""
    folder = root / split
    if not (folder / "nshards.txt").is_file():
        found = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else "no such folder"
        raise DatasetError(f"{folder / 'nshards.txt'} is missing: a webdataset split holds nshards.txt and shards "
                           f"0.tar ... N-1.tar (CLIP_benchmark's layout); found {found} in {root}")
    return folder


def shard_count(path: Path) -> int:
    text = read_text(path).strip()
    if not text.isdigit() or int(text) < 1:
        raise DatasetError(f"{path} should hold the number of shards (a positive whole number) but holds {text[:40]!r}")
    return int(text)


class WebDataset:
    """Map-style access to the samples of one split of a webdataset folder: (PIL image, label)."""

    def __init__(self, root: str | Path, split: str = "test", skip_bad_images: bool = False):
        self.location = str(root)
        root = fetch_from_hub(str(root), split) if str(root).startswith(HF_PREFIX) else Path(root).expanduser()
        self.root, self.split = root, split
        folder = split_folder(root, split)
        n = shard_count(folder / "nshards.txt")
        self.shards = [folder / f"{i}.tar" for i in range(n)]
        missing = [s.name for s in self.shards if not s.is_file()]
        if missing:
            raise DatasetError(f"{folder}: nshards.txt says {n} shards but {len(missing)} are missing ({', '.join(missing[:5])}); "
                               "download the split again")
        if not (root / CLASSNAMES).is_file():
            raise DatasetError(f"{root / CLASSNAMES} is missing: the class names of a webdataset, one per line in label "
                               "order (CLIP_benchmark's layout); give them with dataset.classnames=FILE if you have them")
        self.classes = _read_lines(root / CLASSNAMES)
        self.templates = [t.replace("{c}", "{}") for t in _read_lines(root / TEMPLATES)] if (root / TEMPLATES).is_file() else []
        self.problems: list[str] = []
        self.samples = [s for i, shard in enumerate(self.shards) for s in self._index(i, shard, skip_bad_images)]
        self._files: dict[int, object] = {}
        self._pid = None

    def _index(self, i: int, shard: Path, skip_bad: bool) -> list[Sample]:
        """One pass over a shard's headers: each key's image location and its .cls/.npy contents."""
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        order: list[str] = []
        try:
            with tarfile.open(shard, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, _, ext = m.name.partition(".")
                    if key not in members:
                        members[key] = {}
                        order.append(key)
                    members[key][ext.lower()] = m
                data = {key: {ext: tar.extractfile(m).read() for ext, m in parts.items() if ext in ("cls", "npy")}
                        for key, parts in members.items()}
        except (tarfile.TarError, OSError, EOFError) as e:
            where = f"after sample {order[-1]}" if order else "at its start"
            msg = f"shard {shard} is truncated or corrupt {where} ({type(e).__name__}: {e})"
            if not skip_bad:
                raise DatasetError(f"{msg}; download it again, or pass skip_bad_images=true to skip what cannot be read") from None
            self.problems.append(msg)
            data = {}
            for key, parts in members.items():  # what was indexed before the damage, where its label is whole
                try:
                    with tarfile.open(shard, "r:") as tar:
                        data[key] = {ext: tar.extractfile(m).read() for ext, m in parts.items() if ext in ("cls", "npy")}
                except Exception:  # noqa: BLE001 - the damaged tail: those samples are unreadable
                    data[key] = {}
        samples = []
        for key in order:
            parts, values = members[key], data.get(key, {})
            image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
            label, multilabel, meta = -1, None, None
            try:
                if "cls" in values:
                    label = int(values["cls"].decode().strip())
                    meta = np.load(io.BytesIO(values["npy"])) if "npy" in values else None
                elif "npy" in values:
                    multilabel = np.load(io.BytesIO(values["npy"])).astype(np.float32)
                    label = int(multilabel.argmax()) if multilabel.any() else -1
            except (ValueError, OSError) as e:
                msg = f"shard {shard}, sample {key}: unreadable label ({e})"
                if not skip_bad:
                    raise DatasetError(f"{msg}; pass skip_bad_images=true to skip it") from None
                self.problems.append(msg)
            if image is None or (label < 0 and multilabel is None):
                msg = f"shard {shard}, sample {key}: {'no image' if image is None else 'no label'}"
                if not skip_bad:
                    raise DatasetError(f"{msg} (found {', '.join(sorted(parts))}); pass skip_bad_images=true to skip it")
                self.problems.append(msg)
                image = image or parts[next(iter(parts))]
            samples.append(Sample(i, key, image.offset_data, image.size, label, multilabel, meta))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def name_of(self, index: int) -> str:
        s = self.samples[index]
        return f"{self.shards[s.shard]}:{s.key}"

    def _file(self, shard: int):
        if self._pid != os.getpid():  # a DataLoader worker: its own file handles, never the parent's
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = open(self.shards[shard], "rb")
        return self._files[shard]

    def __getitem__(self, index: int):
        from PIL import Image

        s = self.samples[index]
        f = self._file(s.shard)
        f.seek(s.offset)
        data = f.read(s.size)
        if len(data) != s.size:
            raise OSError(f"{self.shards[s.shard]} ends {s.size - len(data)} bytes into sample {s.key}: the shard is truncated")
        image = Image.open(io.BytesIO(data))
        image.load()
        return image, s.label

    def targets(self) -> dict:
        """Per-sample targets beyond the label: multi-hot labels (multi-label sets) and metadata (WILDS, fairness)."""
        out = {}
        if any(s.multilabel is not None for s in self.samples):
            width = max(len(s.multilabel) for s in self.samples if s.multilabel is not None)
            out["multilabel"] = np.stack([s.multilabel if s.multilabel is not None else np.zeros(width, np.float32)
                                          for s in self.samples])
        if any(s.meta is not None for s in self.samples):
            out["metadata"] = np.stack([np.asarray(s.meta) for s in self.samples])
        return out

    def fingerprint_parts(self) -> list[str]:
        """Each shard's name, size and mtime, and each sample's key and label, in order (no image is read)."""
        lines = []
        for shard in self.shards + [self.root / CLASSNAMES] + ([self.root / TEMPLATES] if (self.root / TEMPLATES).is_file() else []):
            st = shard.stat()
            lines.append(f"{shard.relative_to(self.root)}\0{st.st_size}\0{st.st_mtime_ns}")
        for s in self.samples:
            lines.append(f"{s.shard}:{s.key}\0{s.label}")
        return lines

    def __getstate__(self):  # DataLoader workers get the index, not open files
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None
        return state
