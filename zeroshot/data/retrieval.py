"""Image-caption datasets for retrieval: CLIP_benchmark's retrieval webdatasets and Karpathy's JSON splits.

Both come back as an `EvalDataset` whose "label" is each image's own index, so the image side runs through
the same feature cache, fingerprint and torchrun sharding as classification, unchanged; the captions of
image i are `dataset.source.captions[i]`, every one of them kept.

- CLIP_benchmark's layout (`clip_benchmark.webdataset_builder.convert_retrieval_dataset`):
  `<root>/dataset_type.txt` ("retrieval"), `<root>/<split>/nshards.txt`, shards `0.tar` ... holding
  `s%07d.{webp,png,jpg}` beside `s%07d.txt`, the image's captions one a line. Read in place with `tarfile`.
- Karpathy's splits: `dataset_flickr30k.json` / `dataset_coco.json`, `{"images": [{"filename", "filepath"
  (COCO only), "split", "sentences": [{"raw": ...}, ...]}, ...]}`; images under `<root>/<images>/<filepath>/`.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

from zeroshot.data.wds import (
    IMAGE_EXTENSIONS,
    Sample,
    WebDataset,
    fetch_from_hub,
    shard_count,
    split_folder,
)
from zeroshot.errors import DatasetError
from zeroshot.log import log
from zeroshot.paths import HF_PREFIX

DATASET_TYPE = "dataset_type.txt"


def parse_captions(data: bytes) -> list[str]:
    """A sample's .txt: one caption a line. CLIP_benchmark's writer escapes a newline inside a caption as `\\n`."""
    return [line.replace(r"\n", "\n").strip() for line in data.decode("utf-8").splitlines() if line.strip()]


class CaptionWebDataset(WebDataset):
    """One split of a retrieval webdataset: (PIL image, its own index); `.captions[i]` are image i's captions."""

    def __init__(self, root: str | Path, split: str = "test", skip_bad_images: bool = False):
        self.location = str(root)
        if str(root).startswith(HF_PREFIX):
            root = fetch_from_hub(str(root), split, metadata=(DATASET_TYPE,), required=(DATASET_TYPE,))
        root = Path(root).expanduser()
        self.root, self.split = root, split
        folder = split_folder(root, split)
        kind = (root / DATASET_TYPE).read_text().strip().lower() if (root / DATASET_TYPE).is_file() else "classification"
        if kind != "retrieval":
            raise DatasetError(f"{root} is a {kind} webdataset ({DATASET_TYPE} says so, or is missing), not an image-caption "
                               "one: retrieval reads CLIP_benchmark's retrieval sets (wds_flickr30k, wds_mscoco_captions); "
                               "use `zeroshot eval dataset=wds` for classification sets")
        n = shard_count(folder / "nshards.txt")
        self.shards = [folder / f"{i}.tar" for i in range(n)]
        missing = [s.name for s in self.shards if not s.is_file()]
        if missing:
            raise DatasetError(f"{folder}: nshards.txt says {n} shards but {len(missing)} are missing "
                               f"({', '.join(missing[:5])}); download the split again")
        self.classes, self.templates, self.problems = None, [], []
        self.samples, self.captions = [], []
        for i, shard in enumerate(self.shards):
            self._index_captions(i, shard, skip_bad_images)
        self._files, self._pid = {}, None

    def _index_captions(self, i: int, shard: Path, skip_bad: bool) -> None:
        """One pass over a shard: each key's image location and its captions (the .txt members are tiny)."""
        parts: dict[str, dict[str, tarfile.TarInfo]] = {}
        texts: dict[str, bytes] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for m in tar:
                    if m.isfile():
                        key, _, ext = m.name.partition(".")
                        parts.setdefault(key, {})[ext.lower()] = m
                        if ext.lower() == "txt":
                            texts[key] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            msg = f"shard {shard} is truncated or corrupt ({type(e).__name__}: {e})"
            if not skip_bad:
                raise DatasetError(f"{msg}; download it again, or pass skip_bad_images=true to skip what cannot be read") from None
            self.problems.append(msg)
        for key, members in parts.items():
            image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
            captions = parse_captions(texts[key]) if key in texts else []
            if image is None or not captions:
                msg = f"shard {shard}, sample {key}: {'no image' if image is None else 'no captions'} (found {', '.join(sorted(members))})"
                if not skip_bad:
                    raise DatasetError(f"{msg}; pass skip_bad_images=true to skip it")
                self.problems.append(msg)  # an image without captions can be found by nothing: left out
                continue
            self.samples.append(Sample(i, key, image.offset_data, image.size, len(self.samples)))
            self.captions.append(captions)

    def targets(self) -> dict:
        return {}

    def fingerprint_parts(self) -> list[str]:
        """Each shard's name, size and mtime (captions live in the shards), and the sample order."""
        lines = []
        for path in self.shards + ([self.root / DATASET_TYPE] if (self.root / DATASET_TYPE).is_file() else []):
            st = path.stat()
            lines.append(f"{path.relative_to(self.root)}\0{st.st_size}\0{st.st_mtime_ns}")
        lines += [f"{s.shard}:{s.key}\0{s.label}" for s in self.samples]
        return lines


class KarpathySplit:
    """The images of one split of Karpathy's JSON, in the file's order: (PIL image, its own index)."""

    def __init__(self, json_path: Path, image_root: Path, split: str):
        from zeroshot.data.listing import load_rgb as default_loader  # torchvision's loader, no torchvision import

        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            entries = [e for e in data["images"] if e["split"] == split]
            splits = sorted({e["split"] for e in data["images"]})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{json_path} is not Karpathy's split file ({type(e).__name__}: {e}); it is "
                               '{"images": [{"filename", "split", "sentences": [{"raw"}]}]}') from None
        if not entries:
            raise DatasetError(f"{json_path} has no images in split {split!r}. Its splits: {', '.join(splits)}")
        self.root = image_root
        self.samples = [(str(image_root / e.get("filepath", "") / e["filename"]), i) for i, e in enumerate(entries)]
        self.captions = [[s["raw"].strip() for s in e["sentences"]] for e in entries]
        absent = [p for p, _ in self.samples if not Path(p).is_file()]
        if absent:
            raise DatasetError(f"{len(absent)} of the {len(entries)} {split} images {json_path.name} lists are not under "
                               f"{image_root} (first: {absent[0]}). Put the images there, or set dataset.images=FOLDER "
                               "(relative to dataset.root) to where they are")
        self.loader = default_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.loader(path), label


class CaptionFiles:
    """Images listed with their captions (multilingual sets): (PIL image, its own index), `.captions[i]`."""

    def __init__(self, paths: list[str], captions: list[list[str]], root: Path, where: str):
        from zeroshot.data.listing import load_rgb as default_loader  # torchvision's loader, no torchvision import

        self.root, self.captions, self.loader = root, captions, default_loader
        self.samples = [(p, i) for i, p in enumerate(paths)]
        absent = [p for p in paths if not Path(p).is_file()]
        if absent:
            raise DatasetError(f"{len(absent)} of the {len(paths)} images {where} lists are missing (first: {absent[0]}). "
                               "Put the images there, or set dataset.root=DIR to where the dataset is")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.loader(path), label


def dataset_language(cfg) -> str:
    """The captions' language of a multilingual set, as the dataset spells it; an unknown one lists the others."""
    languages = [str(x) for x in cfg.languages]
    language = str(cfg.get("language") or "")
    language = (cfg.get("language_aliases") or {}).get(language, language)
    if language not in languages:
        raise DatasetError(f"Unknown dataset.language={cfg.get('language')!r} for {cfg.name}. Available: {', '.join(languages)}")
    return language


def _resolve(root: Path, path: str) -> str:
    return str(Path(path) if Path(path).is_absolute() else root / path)


def multilingual_captions(cfg, root: Path, language: str) -> tuple[list[str], list[list[str]], str]:
    """(image paths, captions per image, the file they came from) in the first layout found under root:
    CLIP_benchmark's annotation file; Google's XM3600 captions.jsonl (each image's first caption, as
    CLIP_benchmark keeps); or an image-names file beside one captions file per language (XTD10)."""
    annotation = root / str(cfg.annotation_file).format(language=language)
    if annotation.is_file():
        data = json.loads(annotation.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and len(data.get("image_paths", [])) == len(data.get("annotations", [1]))):
            raise DatasetError(f"{annotation} is not CLIP_benchmark's annotation file "
                               '{"image_paths": [...], "annotations": [...]} of equal length')
        return [_resolve(root, p) for p in data["image_paths"]], [[str(t).strip()] for t in data["annotations"]], str(annotation)
    jsonl = root / str(cfg.captions_jsonl) if cfg.get("captions_jsonl") else None
    if jsonl is not None and jsonl.is_file():
        try:
            items = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
            keys = [item["image/key"] for item in items]
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{jsonl} is not Crossmodal-3600's captions.jsonl (one JSON a line with \"image/key\"): "
                               f"{type(e).__name__}: {e}") from None
        lacking = [k for k, item in zip(keys, items) if not (item.get(language) or {}).get("caption")]
        if lacking:
            raise DatasetError(f"{jsonl}: {len(lacking)} of its {len(items)} images have no {language!r} caption "
                               f"(first: {lacking[0]}): is it the whole captions.jsonl?")
        images = root / str(cfg.images)
        paths = [str(images / f"{k}.jpg") for k in keys]
        return paths, [[item[language]["caption"][0].strip()] for item in items], str(jsonl)
    index = root / str(cfg.index_file) if cfg.get("index_file") else None
    captions = root / str(cfg.captions_file).format(language=language) if cfg.get("captions_file") else None
    if index is not None and captions is not None and index.is_file() and captions.is_file():
        names = index.read_text(encoding="utf-8").splitlines()
        lines = captions.read_text(encoding="utf-8").splitlines()
        if len(lines) < len(names):
            raise DatasetError(f"{captions} has {len(lines)} captions for the {len(names)} images of {index}")
        images = root / str(cfg.images)
        return [str(images / n) for n in names], [[t.strip()] for t in lines[: len(names)]], str(captions)
    raise DatasetError(f"Dataset {cfg.name!r} ({language}) not found under {root}: no {annotation.name}"
                       f"{f', {jsonl}' if jsonl else ''}{f', {captions}' if captions else ''}. Expected layout: "
                       f"{cfg.get('layout')}. Set dataset.root=DIR.")


def build_retrieval_dataset(cfg, skip_bad_images: bool = False):
    """The `EvalDataset` of a `task: retrieval` dataset config: its webdataset if root holds one (or is hf-hub:),
    else Karpathy's JSON under root. The source's `.captions` lists every caption of every image."""
    from omegaconf import open_dict

    from zeroshot.data.base import EvalDataset
    from zeroshot.data.wds import is_wds

    if cfg.get("task") != "retrieval":
        raise DatasetError(f"Dataset {cfg.name!r} is not an image-text retrieval set: `zeroshot retrieval` takes "
                           f"dataset={'|'.join(retrieval_datasets())}; classification sets run with `zeroshot eval`")
    split, root = cfg.split, str(cfg.get("root") or "")
    json_path = Path(root).expanduser() / str(cfg.get("karpathy_json") or "")
    if (cfg.get("hub") and cfg.get("download") and not root.startswith(HF_PREFIX) and not is_wds(root, split)
            and not json_path.is_file()):
        with open_dict(cfg):  # not on disk in either layout: its webdataset, through the Hugging Face cache
            cfg.root = root = f"{HF_PREFIX}{cfg.hub}"
    if cfg.get("languages"):  # captions in one of many languages; the images (and their features) are shared
        base = Path(root).expanduser()
        language = dataset_language(cfg)
        paths, captions, where = multilingual_captions(cfg, base, language)
        source, patterns = CaptionFiles(paths, captions, base, where), []
    elif is_wds(root, split):
        source = CaptionWebDataset(root, split, skip_bad_images)
        for problem in source.problems:
            log.warning("skipping: %s", problem)
        patterns, base = [], source.root
    elif cfg.get("karpathy_json") and json_path.is_file():
        base = Path(root).expanduser()
        source = KarpathySplit(json_path, base / str(cfg.get("images") or ""), split)
        patterns = [str(cfg.karpathy_json)]  # the captions and the split live in it: hashed into the fingerprint
    else:
        fix = f" or dataset.root=hf-hub:{cfg.hub} (or dataset.download=true) to fetch its webdataset" if cfg.get("hub") else ""
        raise DatasetError(f"Dataset {cfg.name!r} ({split} split) not found under {root}: neither a webdataset "
                           f"({split}/nshards.txt) nor {cfg.get('karpathy_json') or 'a Karpathy JSON'}. Expected layout: "
                           f"{cfg.get('layout')}. Set dataset.root=DIR{fix}.")
    if len(source) == 0:
        raise DatasetError(f"Dataset {cfg.name!r} under {root} has no images with captions.")
    extra = {"split": split, "task": "retrieval"}
    ds = EvalDataset(source, None, cfg.name, skip_bad_images=skip_bad_images, root=base, fingerprint_files=patterns,
                     fingerprint_extra=extra)
    return ds


def caption_lists(ds) -> list[list[str]]:
    return ds.source.captions


def retrieval_datasets() -> list[str]:
    """The dataset configs marked `task: retrieval`."""
    import yaml

    from zeroshot.paths import config_dir

    return sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml")
                  if (yaml.safe_load(p.read_text()) or {}).get("task") == "retrieval")
