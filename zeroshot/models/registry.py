"""Where weights come from: a name or path becomes a weights file, the config that came with it, and who it is.

What can be named:
- OpenAI's nine releases ("ViT-B/32", or "ViT-B-32"), downloaded into the verified cache;
- open_clip's pretrained tags, "ARCH/TAG" (e.g. "ViT-B-32/laion2b_s34b_b79k"), resolved through
  zeroshot/reference/openclip_pretrained.csv (generated from open_clip's registry, with each tag's activation);
- "hf-hub:ORG/REPO[@REVISION]", through huggingface_hub (its cache, HF_HUB_OFFLINE, HF_ENDPOINT);
- a local file (any format checkpoint.read_file reads) or a model folder: open_clip's Hub layout
  (open_clip_config.json + open_clip_model.safetensors / open_clip_pytorch_model.bin) or a transformers
  save_pretrained folder (config.json + model.safetensors / pytorch_model.bin + preprocessor_config.json).
"""
from __future__ import annotations

import csv
import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from zeroshot.paths import REFERENCE


_OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"


# OpenAI's names -> (sha256, file name, open_clip architecture); the sha256 is also a path segment of the URL.
_OPENAI = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt", "RN50"),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt", "RN101"),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt", "RN50x4"),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt", "RN50x16"),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt", "RN50x64"),
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt", "ViT-B-32"),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt", "ViT-B-16"),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt", "ViT-L-14"),
    "ViT-L/14@336px": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt", "ViT-L-14-336"),
}


MODELS: dict[str, tuple[str, str]] = {name: (f"{_OPENAI_BASE}/{sha}/{file}", sha) for name, (sha, file, _) in _OPENAI.items()}


# A file with one of these hashes is that OpenAI release, whatever it is called on disk.
OPENAI_SHA256 = {sha: f"{arch}/openai" for _, (sha, _, arch) in _OPENAI.items()}


PRETRAINED = REFERENCE / "openclip_pretrained.csv"


OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass
class Source:
    """A resolved source of weights and what is known about them."""

    kind: str  # openai | openclip_tag | hf_hub | file | openclip_folder | transformers_folder
    label: str  # what reports call it: the release, the hub repo, or the file's name
    location: str  # URL, hub repo, or path
    weights: Path | None = None
    release: str | None = None  # "ARCH/TAG" of a published release, where known
    revision: str | None = None  # the hub commit
    openclip_cfg: dict | None = None  # open_clip model_cfg that came with the weights
    hf_config: dict | None = None  # transformers config.json
    preprocess: dict = field(default_factory=dict)  # mean, std, interpolation, resize_mode, size
    preprocess_from: str = ""
    activation: str | None = None
    activation_from: str = ""
    folder: Path | None = None


def available_models() -> list[str]:
    """Every name `zeroshot.load` and `model.name=` accept without a path: OpenAI's nine and open_clip's ARCH/TAG
    releases (the names `zeroshot models` lists; hf-hub:ORG/REPO, files and folders load too)."""
    return [*MODELS, *(f"{arch}/{tag}" for arch, tag in pretrained_tags())]


def canonical_name(name: str) -> str | None:
    """'ViT-B-32', 'vit-b/32' and 'ViT-B/32' all name ViT-B/32; 'ViT-L-14-336px' names ViT-L/14@336px."""
    def key(s: str) -> str:
        return s.lower().replace("/", "-").replace("@", "-")

    return {key(n): n for n in MODELS}.get(key(name))


@functools.lru_cache()
def pretrained_tags() -> dict[tuple[str, str], dict]:
    with open(PRETRAINED, newline="") as f:
        return {(r["arch"], r["tag"]): r for r in csv.DictReader(f)}


def _tag_key(s: str) -> str:
    return s.lower().replace("-", "_")


def find_tag(name: str) -> tuple[str, str] | None:
    """'ViT-B-32/laion2b_s34b_b79k' (or 'ViT-B-32:laion2b-s34b-b79k') -> its (arch, tag) row key."""
    parts = re.split(r"[/:]", name, maxsplit=1)
    if len(parts) != 2:
        return None
    arch, tag = parts
    for a, t in pretrained_tags():
        if a.lower() == arch.lower() and _tag_key(t) == _tag_key(tag):
            return a, t
    return None


def release_of(arch: str, tag: str) -> str:
    """A release's name without the -quickgelu spelling, so both spellings of one set of weights agree."""
    return f"{arch.removesuffix('-quickgelu')}/{tag}"


def _row_preprocess(row: dict) -> dict:
    return {"mean": [float(x) for x in row["mean"].split()], "std": [float(x) for x in row["std"].split()],
            "interpolation": row["interpolation"] or "bicubic", "resize_mode": row["resize_mode"] or "shortest"}


def unknown_name_message(text: str) -> str:
    names = list(MODELS) + [f"{a}/{t}" for a, t in pretrained_tags()]
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    if "/" in text and not close:  # an unknown tag for a known architecture: list that architecture's tags
        arch = re.split(r"[/:]", text)[0].lower()
        close = [f"{a}/{t}" for a, t in pretrained_tags() if a.lower() == arch][:8]
    hint = f" Closest: {', '.join(close)}." if close else ""
    return (f"Unknown model {text!r}.{hint} Name one of OpenAI's ({', '.join(MODELS)}), an open_clip ARCH/TAG "
            "(`python -m zeroshot models` lists them), hf-hub:ORG/REPO, or a path to a checkpoint file or model folder.")
