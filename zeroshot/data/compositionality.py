"""Image-caption selection sets (compositionality): SugarCrepe, Winoground, ARO and a user's own JSONL, each read
from the layout its authors ship, into one shape: the unique images as an `EvalDataset` (the "label" of image i
is i, so the feature cache, fingerprint and torchrun sharding are classification's, unchanged) and a list of
`Instance`s: which images, which candidate captions, and which caption is right for each image.

Layouts (docs/compositionality.md has them in full):
- SugarCrepe (RAIVNLab/sugar-crepe data/): `<subset>.json` = {id: {"filename", "caption", "negative_caption"}}
  for the seven subsets, images in COCO `val2017/`.
- Winoground (facebook/winoground, gated): the Hub's parquet files (`image_0`, `image_1` as {bytes, path},
  `caption_0`, `caption_1`, `id`, `tag`, `secondary_tag`, `num_main_preds`, `collapsed_tag`), or the repo's
  own `data/examples.jsonl` with `data/images.zip` (read in place) or an `images/` folder (`<image_0>.png`).
- ARO (mertyg/vision-language-models-are-bows): `visual_genome_relation.json` / `visual_genome_attribution.json`,
  lists of {"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption",
  "relation_name" | "attributes"}, images under `images/`, each scored on its box's crop; COCO-Order and
  Flickr30k-Order as test-case lists {"image", "caption_options"} (the true caption first, then its 4
  perturbations, as ARO's COCO_Order/Flickr30k_Order build them).
- Your own: JSONL, one instance a line: {"image": PATH, "captions": [...], "answer": K} or
  {"images": [PATH, ...], "captions": [...]} (caption j belongs to image j), optional "group".
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from zeroshot.errors import DatasetError
from zeroshot.log import log
from zeroshot.paths import HF_PREFIX

SUGAR_CREPE_SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
WINOGROUND_FIELDS = ("id", "caption_0", "caption_1", "image_0", "image_1")
ARO_VG_FIELDS = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")


@dataclass
class Instance:
    """One test case: images (indices into the unique images), candidate captions, and for each image the index of
    its right caption. `group` is what a per-group accuracy groups by (subset, relation, attribute pair, tag)."""

    key: str
    images: list[int]
    captions: list[str]
    answers: list[int]
    group: str = ""


class ImageList(Dataset):
    """The unique images of a selection set: (RGB PIL image, its own index). An item is a file path with an
    optional crop box (x, y, w, h), or encoded bytes (Winoground's parquet) named `<file>#<row>/<column>`."""

    def __init__(self, root: Path):
        self.root = root
        self.samples: list[tuple[str, int]] = []
        self._boxes: dict[int, tuple[float, float, float, float]] = {}
        self._bytes: dict[int, bytes] = {}
        self._members: dict[int, tuple[str, str]] = {}  # index -> (zip file, member): Winoground's images.zip, read in place
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._pid: int | None = None
        self._index: dict[tuple, int] = {}

    def add(self, path: str, box: tuple | None = None, data: bytes | None = None, member: tuple[str, str] | None = None) -> int:
        """The index of this image (path and crop), added the first time it is seen."""
        key = (path, box)
        if key not in self._index:
            i = len(self.samples)
            self._index[key] = i
            self.samples.append((path, i))
            if box is not None:
                self._boxes[i] = box
            if data is not None:
                self._bytes[i] = data
            if member is not None:
                self._members[i] = member
        return self._index[key]

    def packed(self, index: int) -> bool:
        return index in self._bytes or index in self._members

    def _member(self, index: int) -> io.BytesIO:
        """A zip member's bytes; each process (DataLoader worker) opens the zip files for itself."""
        if self._pid != os.getpid():
            self._zips, self._pid = {}, os.getpid()
        archive, name = self._members[index]
        if archive not in self._zips:
            self._zips[archive] = zipfile.ZipFile(archive)
        return io.BytesIO(self._zips[archive].read(name))

    def __getstate__(self):
        return {**self.__dict__, "_zips": {}, "_pid": None}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, _ = self.samples[index]
        source = io.BytesIO(self._bytes[index]) if index in self._bytes else self._member(index) if index in self._members else path
        with Image.open(source) as im:
            image = im.convert("RGB")
        box = self._boxes.get(index)
        if box is not None:  # ARO's crop: (x, y, x + w, y + h) of the RGB image
            x, y, w, h = box
            image = image.crop((x, y, x + w, y + h))
        return image, index

    def box(self, index: int):
        return self._boxes.get(index)


def read_json(path: Path, what: str):
    """A JSON annotation file, or one line naming it and what is wrong (missing, not UTF-8, not JSON)."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} is not there: set dataset.root=DIR to the folder that holds it "
                           "(docs/compositionality.md lists each set's files and where to get them)")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8") from None
    except ValueError as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from None


def check_text(value, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {name} is {'missing' if value is None else repr(value)[:60]}: every candidate "
                           "caption must be a non-empty string (an instance needs a right and a wrong caption)")
    return value


def check_images(images: ImageList, what: str, fix: str) -> None:
    """Every image the annotations name must be on disk: counted and the first named, before anything is encoded."""
    absent = [p for i, (p, _) in enumerate(images.samples) if not images.packed(i) and not Path(p).is_file()]
    if absent:
        raise DatasetError(f"{len(absent)} of the {len(images)} images {what} names are not there (first: {absent[0]}). {fix}")


def read_sugar_crepe(root: Path, annotations: Path, image_dir: Path, subsets) -> tuple[ImageList, list[Instance]]:
    """The seven subsets' {id: {filename, caption, negative_caption}}, in file order; COCO images shared."""
    images, instances = ImageList(root), []
    unknown = [s for s in subsets if s not in SUGAR_CREPE_SUBSETS]
    if unknown:
        raise DatasetError(f"unknown SugarCrepe subset {unknown[0]!r}: the subsets are {', '.join(SUGAR_CREPE_SUBSETS)}")
    for subset in subsets:
        path = annotations / f"{subset}.json"
        data = read_json(path, f"SugarCrepe's {subset} annotation file")
        if not isinstance(data, dict):
            raise DatasetError(f"{path} is not SugarCrepe's layout: {{id: {{filename, caption, negative_caption}}}}")
        for key, entry in data.items():
            where = f"{path.name}, id {key}"
            if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                raise DatasetError(f"{where} has no filename: SugarCrepe's entries are {{filename, caption, negative_caption}}")
            captions = [check_text(entry.get("caption"), where, "caption"),
                        check_text(entry.get("negative_caption"), where, "negative_caption")]
            image = images.add(str(image_dir / entry["filename"]))
            instances.append(Instance(f"{subset}/{key}", [image], captions, [0], subset))
    check_images(images, "SugarCrepe's annotations", f"Put COCO val2017 there, or set dataset.images=FOLDER (relative "
                                                     f"to dataset.root {root})")
    return images, instances


def winoground_rows(root: Path) -> tuple[list[dict], str, list[str]]:
    """Winoground's rows from the parquet files under root, else from examples.jsonl; and the files read."""
    parquet = sorted(root.rglob("*.parquet"))
    if parquet:
        import pyarrow.parquet as pq

        rows = []
        for f in parquet:
            table = pq.read_table(f)
            missing = [c for c in WINOGROUND_FIELDS if c not in table.column_names]
            if missing:
                raise DatasetError(f"{f} is not Winoground's parquet: it lacks {', '.join(missing)} "
                                   f"(has {', '.join(table.column_names)})")
            rel = f.relative_to(root).as_posix()
            rows += [{**r, "_file": rel, "_row": i} for i, r in enumerate(table.to_pylist())]
        return rows, "parquet", [p.relative_to(root).as_posix() for p in parquet]
    jsonl = next((p for p in (root / "examples.jsonl", root / "data" / "examples.jsonl") if p.is_file()), None)
    if jsonl is None:
        raise DatasetError(f"Winoground not found under {root}: neither the Hub's parquet files nor examples.jsonl with "
                           "images/. Set dataset.root=DIR to a copy, or dataset.download=true to fetch facebook/winoground "
                           "(gated: accept its terms on the Hub and log in first)")
    rows = []
    for n, line in enumerate(read_lines(jsonl), 1):
        try:
            rows.append({**json.loads(line), "_file": "", "_row": n})
        except ValueError as e:
            raise DatasetError(f"{jsonl}, line {n} is not JSON ({e})") from None
    return rows, "jsonl", [jsonl.relative_to(root).as_posix()]


def read_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8") from None
    return [line for line in text.splitlines() if line.strip()]


def read_winoground(root: Path) -> tuple[ImageList, list[Instance], list[str]]:
    """400 instances of two images and two captions: caption_0 belongs to image_0, caption_1 to image_1."""
    rows, kind, files = winoground_rows(root)
    images, instances = ImageList(root), []
    folder = next((p for p in (root / "images", root / "data" / "images") if p.is_dir()), root / "images")
    archive = next((p for p in (root / "data" / "images.zip", root / "images.zip") if p.is_file()), None)
    members = {}
    if kind == "jsonl" and not folder.is_dir() and archive is not None:  # the Hub's data/images.zip, read in place
        with zipfile.ZipFile(archive) as z:
            members = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
        files.append(archive.relative_to(root).as_posix())
    for r in rows:
        where = f"Winoground {r['_file'] or 'examples.jsonl'} row {r['_row']}"
        missing = [f for f in WINOGROUND_FIELDS if r.get(f) is None]
        if missing:
            raise DatasetError(f"{where} lacks {', '.join(missing)}")
        pair = []
        for col in ("image_0", "image_1"):
            value = r[col]
            if kind == "parquet":
                data = value.get("bytes") if isinstance(value, dict) else None
                if not data:
                    raise DatasetError(f"{where}: {col} holds no image bytes")
                pair.append(images.add(f"{root / r['_file']}#{r['_row']}/{col}", data=data))
            elif members:
                name = members.get(f"{value}.png")
                if name is None:
                    raise DatasetError(f"{where}: {col} names {value}.png, which {archive} does not hold")
                pair.append(images.add(f"{archive}#{name}", member=(str(archive), name)))
            else:
                pair.append(images.add(str(folder / f"{value}.png")))
        captions = [check_text(r["caption_0"], where, "caption_0"), check_text(r["caption_1"], where, "caption_1")]
        instances.append(Instance(f"winoground/{r['id']}", pair, captions, [0, 1], str(r.get("collapsed_tag") or "")))
    check_images(images, "Winoground's examples.jsonl", f"Put them in {folder}, or data/images.zip beside examples.jsonl")
    return images, instances, files


def hub_snapshot(repo: str, download: bool) -> Path:
    """A gated Hub dataset's files through huggingface_hub's cache (HF_HOME, HF_ENDPOINT, HF_TOKEN)."""
    from huggingface_hub import errors, snapshot_download

    terms = (f"{repo} is gated: accept its terms at https://huggingface.co/datasets/{repo} and log in "
             "(`hf auth login`, or HF_TOKEN=...), then run with dataset.download=true; or set dataset.root=DIR to a local copy")
    try:
        return Path(snapshot_download(repo, repo_type="dataset", local_files_only=not download,
                                      allow_patterns=["data/*", "*.parquet", "*.md"]))
    except errors.GatedRepoError:
        raise DatasetError(terms) from None
    except errors.LocalEntryNotFoundError:
        raise DatasetError(f"{repo} is not in the Hugging Face cache{'' if download else ' (dataset.download=false)'}. "
                           + terms) from None
    except errors.RepositoryNotFoundError:  # the Hub answers an unauthorised request for a gated repo this way too
        raise DatasetError(terms) from None


def read_aro_vg(root: Path, file: str, image_dir: Path, group_by: str) -> tuple[ImageList, list[Instance]]:
    """VG-Relation / VG-Attribution: each case's crop with [false_caption, true_caption] (ARO's caption_options
    order; the true one is index 1), grouped by relation name or by the attribute pair "a_b"."""
    path = root / file
    data = read_json(path, f"ARO's {file}")
    if not isinstance(data, list):
        raise DatasetError(f"{path} is not ARO's layout: a list of {{{', '.join(ARO_VG_FIELDS)}, {group_by}}}")
    images, instances = ImageList(root), []
    for n, case in enumerate(data):
        where = f"{file}, case {n}"
        missing = [f for f in (*ARO_VG_FIELDS, group_by) if not isinstance(case, dict) or case.get(f) is None]
        if missing:
            raise DatasetError(f"{where} lacks {', '.join(missing)} (ARO's fields: {', '.join(ARO_VG_FIELDS)}, {group_by})")
        box = tuple(float(case[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        image = images.add(str(image_dir / case["image_path"]), box)
        captions = [check_text(case["false_caption"], where, "false_caption"),
                    check_text(case["true_caption"], where, "true_caption")]
        group = case[group_by]
        group = f"{group[0]}_{group[1]}" if group_by == "attributes" else str(group)
        instances.append(Instance(f"{Path(file).stem}/{n}", [image], captions, [1], group))
    check_images(images, f"ARO's {file}", f"Unzip ARO's vgr_vga_images.zip so that {image_dir} holds them, or set "
                                          "dataset.images=FOLDER")
    return images, instances


def read_aro_order(root: Path, file: str, image_dir: Path) -> tuple[ImageList, list[Instance]]:
    """COCO-Order / Flickr30k-Order test cases: {"image", "caption_options"}, the true caption first."""
    path = root / file
    data = read_json(path, f"the order test cases {file}")
    if not isinstance(data, list):
        raise DatasetError(f"{path} is not a list of {{\"image\", \"caption_options\"}} test cases")
    images, instances = ImageList(root), []
    for n, case in enumerate(data):
        where = f"{file}, case {n}"
        options = case.get("caption_options") if isinstance(case, dict) else None
        if not isinstance(case, dict) or not isinstance(case.get("image"), str) or not isinstance(options, list):
            raise DatasetError(f"{where} is not {{\"image\": PATH, \"caption_options\": [true, perturbed, ...]}}")
        if len(options) < 2:
            raise DatasetError(f"{where} has {len(options)} caption: an instance needs the true caption and at least one other")
        captions = [check_text(c, where, f"caption_options[{j}]") for j, c in enumerate(options)]
        instances.append(Instance(f"{Path(file).stem}/{n}", [images.add(str(image_dir / case["image"]))], captions, [0], ""))
    check_images(images, file, "Put the images there, or set dataset.images=FOLDER (relative to dataset.root)")
    return images, instances


def read_selection_jsonl(path: Path) -> tuple[ImageList, list[Instance]]:
    """A user's own set; image paths relative to the file's folder."""
    if not path.is_file():
        raise DatasetError(f"{path} is not there: dataset.path=FILE names your JSONL (docs/compositionality.md)")
    images, instances = ImageList(path.parent), []
    for n, line in enumerate(read_lines(path), 1):
        where = f"{path.name}, line {n}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DatasetError(f"{where} is not JSON ({e})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where} is not a JSON object")
        paths = row.get("images") if "images" in row else [row.get("image")]
        captions = row.get("captions")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise DatasetError(f"{where}: give \"image\": PATH or \"images\": [PATH, ...]")
        if not isinstance(captions, list) or len(captions) < 2:
            raise DatasetError(f"{where} has {len(captions) if isinstance(captions, list) else 'no'} caption(s): an "
                               "instance needs the right caption and at least one wrong one in \"captions\"")
        captions = [check_text(c, where, f"captions[{j}]") for j, c in enumerate(captions)]
        answers = [row.get("answer")] if "images" not in row else list(range(len(paths)))
        if len(paths) > len(captions) or not all(isinstance(a, int) and 0 <= a < len(captions) for a in answers):
            raise DatasetError(f"{where}: \"answer\" must be the index of the right caption (0..{len(captions) - 1}); "
                               "with \"images\", caption j belongs to image j (no more images than captions)")
        index = [images.add(str((path.parent / p) if not Path(p).is_absolute() else Path(p))) for p in paths]
        instances.append(Instance(str(row.get("id", n)), index, captions, answers, str(row.get("group", ""))))
    if not instances:
        raise DatasetError(f"{path} holds no instances")
    check_images(images, path.name, "Image paths are relative to the JSONL's folder")
    return images, instances


def build_selection_dataset(cfg, skip_bad_images: bool = False):
    """(EvalDataset of the unique images, instances) for a `task: compositionality` dataset config."""
    from zeroshot.data.base import EvalDataset

    if cfg.get("task") != "compositionality":
        raise DatasetError(f"Dataset {cfg.name!r} is not an image-caption selection set: `zeroshot compositionality` takes "
                           f"dataset={'|'.join(selection_datasets())}")
    kind = cfg.kind
    root = Path(str(cfg.get("root") or ".")).expanduser()
    files: list[str] = []
    if kind == "sugar_crepe":
        images, instances = read_sugar_crepe(root, root / str(cfg.annotations or ""), root / str(cfg.images or ""),
                                             list(cfg.subsets))
        files = [f"{cfg.annotations or '.'}/{s}.json" for s in cfg.subsets]
    elif kind == "winoground":
        if str(cfg.root).startswith(HF_PREFIX) or (cfg.get("hub") and not root.is_dir()):  # the Hub's cache, or the Hub
            root = hub_snapshot(str(cfg.root).removeprefix(HF_PREFIX) if str(cfg.root).startswith(HF_PREFIX) else cfg.hub,
                                bool(cfg.download))
        images, instances, files = read_winoground(root)
    elif kind in ("aro_relation", "aro_attribution"):
        images, instances = read_aro_vg(root, cfg.file, root / str(cfg.images or ""), cfg.group_by)
        files = [cfg.file]
    elif kind == "aro_order":
        images, instances = read_aro_order(root, cfg.file, root / str(cfg.images or ""))
        files = [cfg.file]
    elif kind == "selection_jsonl":
        if not cfg.get("path"):
            raise DatasetError("dataset=caption_selection needs dataset.path=FILE (your JSONL, docs/compositionality.md)")
        path = Path(str(cfg.path)).expanduser()
        images, instances = read_selection_jsonl(path)
        root, files = path.parent, [path.name]
    else:
        raise DatasetError(f"unknown image-caption selection layout {kind!r}")
    log.info("%s: %d instances over %d images", cfg.name, len(instances), len(images))
    ds = EvalDataset(images, None, cfg.name, skip_bad_images=skip_bad_images, root=root, fingerprint_files=files,
                     fingerprint_extra={"task": "compositionality", "kind": kind})
    return ds, instances


def selection_datasets() -> list[str]:
    """The dataset configs marked `task: compositionality`."""
    import yaml

    from zeroshot.paths import config_dir

    return sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml")
                  if (yaml.safe_load(p.read_text()) or {}).get("task") == "compositionality")
