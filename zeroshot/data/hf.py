"""Hugging Face datasets, read with pyarrow alone (no `datasets` library): the Hub's Parquet shards
(`hf-hub:ORG/REPO[@REVISION]`, through huggingface_hub's cache, HF_ENDPOINT and HF_HUB_OFFLINE), a local folder
of Parquet files, or a `datasets.save_to_disk` folder (Arrow IPC stream files beside dataset_info.json/state.json,
one subfolder per split under dataset_dict.json).

    image column   struct<bytes: binary, path: string> (the `Image` feature) or plain binary: encoded image bytes
    label column   integers, with the class names in its `ClassLabel` feature (schema metadata b"huggingface" ->
                   {"info": {"features": ...}}, or dataset_info.json), or strings numbered by dataset.classnames

Only the label column is read up front (a few bytes a row). Images are read a row group (Parquet) or record batch
(Arrow) at a time inside whichever DataLoader worker asks for them, each worker opening the files itself, so a
150 GB split streams: the index is (file, row group, row), never the data. Image bytes are decoded as
torchvision's loader decodes an image file (PIL, then RGB), so an image gives the same pixels from any source.
"""
from __future__ import annotations

import bisect
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zeroshot.errors import DatasetError
from zeroshot.files import read_text
from zeroshot.log import log
from zeroshot.paths import HF_PREFIX

# Where the Hub puts a split's Parquet files (fnmatch patterns, `*` crossing folders): <split>-00000-of-00001.parquet
# (the datasets library's push_to_hub), <config>/<split>/0000.parquet (refs/convert/parquet), <split>.parquet.
HUB_PATTERNS = ("{s}-*.parquet", "*/{s}-*.parquet", "{s}.parquet", "*/{s}.parquet", "{s}/*.parquet", "*/{s}/*.parquet")
SPLIT_SEPARATORS = "-._ 0123456789"  # what may follow a split's name in a file name (the datasets library's rule)


@dataclass(frozen=True)
class Chunk:
    """A Parquet row group or an Arrow record batch: the unit read at once."""

    file: int
    group: int
    start: int  # the dataset index of its first row
    rows: int


class HFDataset:
    """Map-style access to one split of a Hugging Face dataset: (PIL image, label)."""

    def __init__(self, root: str | Path, split: str, image_column: str, label_column: str,
                 classnames: list[str] | None = None):
        self.location, self.split = str(root), split
        folder = fetch_from_hub(str(root), split) if str(root).startswith(HF_PREFIX) else Path(root).expanduser()
        self.root, self.files, self.format = split_files(folder, split)
        self.names = [self.relative(i) for i in range(len(self.files))]  # for messages and predictions.csv
        self.image_column, self.label_column = image_column, label_column
        names = self._check_columns()
        self.chunks, raw = self._index()
        self.starts = [c.start for c in self.chunks]
        self.file_starts = {c.file: c.start for c in reversed(self.chunks)}  # each file's first row
        self.labels, self.classes = number_labels(raw, names, classnames, self)
        self._open: dict[int, object] = {}
        self._cached: tuple[Chunk, object] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.starts[-1] + self.chunks[-1].rows if self.chunks else 0

    def relative(self, file: int) -> str:
        return os.path.relpath(self.files[file], self.root)

    def name_of(self, index: int) -> str:
        file = self.chunks[bisect.bisect_right(self.starts, index) - 1].file
        return f"{self.names[file]}#{index - self.file_starts[file]}"

    def row_of(self, index: int) -> str:
        return f"row {self.name_of(index)} (column {self.label_column!r})"

    # ---------------------------------------------------------------- reading

    def _schema(self, file: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.format == "parquet":
            return pq.read_schema(self.files[file])
        with pa.memory_map(str(self.files[file])) as source:
            return pa.ipc.open_stream(source).schema

    def _check_columns(self) -> list[str] | None:
        """Every file has both columns, of image and label types, and the same ClassLabel names (returned, or None)."""
        import pyarrow as pa

        found = {}
        for i in range(len(self.files)):
            schema = self._schema(i)
            for column in (self.image_column, self.label_column):
                if column not in schema.names:
                    raise DatasetError(f"{self.location} ({self.names[i]}) has no column {column!r}. Its columns: "
                                       f"{', '.join(schema.names)}. Set dataset.image_column / dataset.label_column to them")
            kind, label = schema.field(self.image_column).type, schema.field(self.label_column).type
            if not holds_images(kind):
                images = [f.name for f in schema if holds_images(f.type)]
                raise DatasetError(f"column {self.image_column!r} of {self.location} holds {kind}, not images; its image "
                                   f"columns: {', '.join(images) or 'none'} (dataset.image_column=NAME)")
            if not (pa.types.is_integer(label) or pa.types.is_string(label) or pa.types.is_large_string(label)):
                raise DatasetError(f"column {self.label_column!r} of {self.location} holds {label}, not class ids or "
                                   "names (dataset.label_column=NAME)")
            found[i] = classlabel_names(features_of(schema, self.root).get(self.label_column))
        if len({json.dumps(n) for n in found.values()}) > 1:  # shards with other label orders: labels would mix
            (a, x), (b, y) = next((p, q) for p, q in zip(found.items(), list(found.items())[1:]) if p[1] != q[1])
            raise DatasetError(f"{self.names[a]} and {self.names[b]} of {self.location} name the classes of "
                               f"{self.label_column!r} differently ({x and x[:5]} vs {y and y[:5]}): another dataset's files?")
        return found[0]

    def _batches(self, file: int):
        """An Arrow file's record batches, memory-mapped (zero copy: the pages are read as rows are used)."""
        import pyarrow as pa

        source = pa.memory_map(str(self.files[file]))
        try:
            return list(pa.ipc.open_stream(source))
        except pa.ArrowInvalid:  # the random-access file format, not the stream format save_to_disk writes
            reader = pa.ipc.open_file(source)
            return [reader.get_batch(i) for i in range(reader.num_record_batches)]

    def _index(self) -> tuple[list[Chunk], list]:
        """Every row group's (or record batch's) row count, and the label column's values, in order."""
        import pyarrow.parquet as pq

        chunks, labels, start = [], [], 0
        for i, path in enumerate(self.files):
            if self.format == "parquet":
                pf = pq.ParquetFile(path)
                groups = [(g, pf.read_row_group(g, columns=[self.label_column]).column(0))
                          for g in range(pf.metadata.num_row_groups)]
            else:
                groups = [(g, b.column(self.label_column)) for g, b in enumerate(self._batches(i))]
            for g, column in groups:
                if len(column):
                    chunks.append(Chunk(i, g, start, len(column)))
                    labels += column.to_pylist()
                    start += len(column)
        return chunks, labels

    def _column(self, chunk: Chunk):
        """The image column of one row group, read once by this process (the last one read stays in memory)."""
        import pyarrow.parquet as pq

        if self._pid != os.getpid():  # a DataLoader worker: its own file handles, never the parent's
            self._open, self._cached, self._pid = {}, None, os.getpid()
        if self._cached is not None and self._cached[0] == chunk:
            return self._cached[1]
        if chunk.file not in self._open:
            self._open.clear()  # one file open at a time: a split of thousands of shards stays within the fd limit
            self._open[chunk.file] = pq.ParquetFile(self.files[chunk.file]) if self.format == "parquet" \
                else self._batches(chunk.file)
        handle = self._open[chunk.file]
        if self.format == "parquet":
            column = handle.read_row_group(chunk.group, columns=[self.image_column]).column(0)
        else:
            column = handle[chunk.group].column(self.image_column)
        self._cached = (chunk, column)
        return column

    def __getitem__(self, index: int):
        chunk = self.chunks[bisect.bisect_right(self.starts, index) - 1]
        cell = self._column(chunk)[index - chunk.start].as_py()
        data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
        return decode(data, path, self.root, self.name_of(index)), self.labels[index]

    def __getstate__(self):  # DataLoader workers get the index, not open files nor cached row groups
        state = dict(self.__dict__)
        state["_open"], state["_cached"], state["_pid"] = {}, None, None
        return state


def decode(data: bytes | None, path: str | None, root: Path, where: str):
    """An image cell as torchvision's loader reads an image file: PIL opens it, then converts it to RGB."""
    from PIL import Image

    if data is None:  # an Image feature that points at a file instead of holding its bytes
        if not path:
            raise OSError(f"{where}: the image cell is empty")
        from zeroshot.data.listing import load_rgb

        return load_rgb(str(Path(path) if Path(path).is_absolute() else root / path))
    image = Image.open(io.BytesIO(data))
    return image.convert("RGB")


def holds_images(kind) -> bool:
    """An Arrow type that can hold encoded images: binary, or the Image feature's struct<bytes, path>."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0 and holds_images(kind.field("bytes").type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def features_of(schema, root: Path) -> dict:
    """The `datasets` features: the schema's b"huggingface" metadata, else the dataset_info.json beside the files."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            return json.loads(meta).get("info", {}).get("features") or {}
        except (ValueError, AttributeError):
            log.warning("the b'huggingface' metadata of %s is not JSON: no class names from it", root)
    info = root / "dataset_info.json"
    if info.is_file():
        try:
            return json.loads(read_text(info)).get("features") or {}
        except ValueError:
            log.warning("%s is not JSON: no class names from it", info)
    return {}


def classlabel_names(feature) -> list[str] | None:
    """A ClassLabel feature's names (`{"_type": "ClassLabel", "names": [...]}`), else None."""
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
        return [str(n) for n in feature["names"]]
    return None


def number_labels(raw: list, names: list[str] | None, classnames: list[str] | None, ds: HFDataset):
    """(labels as class indices, the class names the data gives or None). String labels are numbered by the
    class-names file; integer labels without a ClassLabel take their names from dataset.classnames or prompts."""
    column = f"column {ds.label_column!r} of {ds.location}"
    missing = next((i for i, y in enumerate(raw) if y is None), None)
    if missing is not None:
        raise DatasetError(f"{ds.row_of(missing)} has no label: this split is unlabelled (the Hub's test splits often are); "
                           "evaluate a labelled split (dataset.split=validation, ...)")
    if raw and isinstance(raw[0], str):
        if not classnames:
            raise DatasetError(f"{column} holds class names as text, with no ClassLabel to number them: pass "
                               "dataset.classnames=FILE (one name per line, in label order)")
        index = {c: i for i, c in enumerate(classnames)}
        unknown = sorted({str(y) for y in raw} - set(index))
        if unknown:
            raise DatasetError(f"{column} has labels not in dataset.classnames: {unknown[:10]}")
        return [index[y] for y in raw], list(classnames)
    labels = [int(y) for y in raw]
    negative = next((i for i, y in enumerate(labels) if y < 0), None)
    if negative is not None:
        raise DatasetError(f"{ds.row_of(negative)} has label {labels[negative]} (the `datasets` library's 'no label'): this "
                           "split is unlabelled; evaluate a labelled split (dataset.split=validation, ...)")
    if names is None and not classnames:
        log.info("%s has no ClassLabel feature: class names come from dataset.classnames or the prompt set", column)
    return labels, names


# ---------------------------------------------------------------- which files hold the split


def split_of(relative: Path, split: str) -> bool:
    """Whether a file belongs to `split` by the datasets library's naming rule: a folder named after the split,
    or a file name that starts with it followed by a separator (test-00000-of-00002.parquet, test.parquet)."""
    if split in relative.parts[:-1]:
        return True
    stem = relative.name
    return stem.startswith(split) and len(stem) > len(split) and stem[len(split)] in SPLIT_SEPARATORS


def split_names(files: list[Path]) -> list[str]:
    """The split names the files' names suggest (for messages)."""
    return sorted({re.split(r"[-._ 0-9]", f.name, maxsplit=1)[0] or f.parent.name for f in files})


def split_files(folder: Path, split: str) -> tuple[Path, list[Path], str]:
    """(root, the split's files in order, "parquet" or "arrow") for a Parquet file or folder, or a save_to_disk folder."""
    if folder.is_file():
        return folder.parent, [folder], "arrow" if folder.suffix == ".arrow" else "parquet"
    if not folder.is_dir():
        raise DatasetError(f"Dataset 'hf' ({split} split) not found: no such folder {folder}. Set dataset.root=DIR to a "
                           "folder of Parquet files or a save_to_disk folder, or dataset.root=hf-hub:ORG/REPO")
    if (folder / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk: one folder per split
        splits = json.loads(read_text(folder / "dataset_dict.json")).get("splits") or []
        if split not in splits:
            raise DatasetError(f"{folder} has no split {split!r}: its splits are {', '.join(splits)} (dataset.split=NAME)")
        folder = folder / split
    if (folder / "state.json").is_file():  # Dataset.save_to_disk: the Arrow files state.json lists, in order
        state = json.loads(read_text(folder / "state.json"))
        if state.get("_split") and state["_split"] != split:
            log.warning("%s was saved from split %r; read as dataset.split=%s", folder, state["_split"], split)
        files = [folder / f["filename"] for f in state.get("_data_files") or []]
        missing = [f.name for f in files if not f.is_file()]
        if missing or not files:
            raise DatasetError(f"{folder}/state.json lists {len(files)} Arrow files, {len(missing)} missing "
                               f"({', '.join(missing[:3])}): save the dataset again")
        return folder, files, "arrow"
    found = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    files = [p for p in found if split_of(p.relative_to(folder), split)]
    if not files and found and not any(split_of(p.relative_to(folder), s) for p in found for s in split_names(found)):
        log.warning("%s: no file name says its split; all %d Parquet files are read as dataset.split=%s",
                    folder, len(found), split)
        files = found
    if not files:
        there = f"the splits there: {', '.join(split_names(found))}" if found else "it holds no .parquet files"
        raise DatasetError(f"{folder} has no Parquet files for split {split!r} ({there}); set dataset.split=NAME, or "
                           "dataset.root to a folder of Parquet files or a save_to_disk folder")
    return folder, files, "parquet"


def fetch_from_hub(spec: str, split: str) -> Path:
    """The split's Parquet files of a Hub dataset repo, through huggingface_hub's cache (HF_ENDPOINT, HF_HUB_OFFLINE):
    only the files whose names say they are this split are downloaded. Returns the snapshot folder."""
    from huggingface_hub import errors, snapshot_download

    repo, _, revision = spec[len(HF_PREFIX):].partition("@")
    patterns = [p.format(s=split) for p in HUB_PATTERNS]
    offline = (f"On a machine with internet run `hf download {repo} --repo-type dataset --include '*{split}*.parquet' "
               "--local-dir DIR`, copy DIR here and set dataset.root=DIR.")
    incomplete = getattr(errors, "IncompleteSnapshotError", errors.LocalEntryNotFoundError)
    try:
        folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision or None, allow_patterns=patterns))
    except (errors.LocalEntryNotFoundError, incomplete):
        raise DatasetError(f"{spec}: the {split} split is not in the Hugging Face cache and the Hub cannot be reached "
                           f"(offline, or HF_HUB_OFFLINE=1). {offline}") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
        raise DatasetError(f"{spec}: the Hub has no dataset repository {repo!r}{f' at {revision!r}' if revision else ''} "
                           f"({type(e).__name__})") from None
    if not any(split_of(p.relative_to(folder), split) for p in folder.rglob("*.parquet")):
        raise DatasetError(f"{spec} has no Parquet files for split {split!r} (named {split}-*.parquet or in a {split}/ "
                           f"folder){hub_splits(repo, revision)}: set dataset.split=NAME. A repo stored in another format "
                           f"has Parquet copies at {spec.split('@')[0]}@refs/convert/parquet")
    return folder


def hub_splits(repo: str, revision: str) -> str:
    """", its splits: ..." from the repo's file list, when the Hub answers (for a message)."""
    from huggingface_hub import HfApi

    try:
        names = HfApi().list_repo_files(repo, repo_type="dataset", revision=revision or None)
    except Exception:  # noqa: BLE001 - only a message's detail: offline, or any Hub error
        return ""
    found = [Path(n) for n in names if n.endswith(".parquet")]
    return f"; its Parquet splits: {', '.join(split_names(found))}" if found else "; it holds no Parquet files"
