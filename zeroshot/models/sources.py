"""From a name or path to a Source (a weights file, the config that came with it, and who it is):
OpenAI's names (the verified download cache), open_clip's ARCH/TAG releases (the release table),
hf-hub:ORG/REPO[@REVISION], local files and model folders. `check_name` says what kind of name it is, or why
it is none, before anything is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

from zeroshot.errors import ConfigError, MissingFileError
from zeroshot.models import (
    registry,  # through the module: its tables can be extended (tests do)
)
from zeroshot.models.hub import _hub, _hub_weights, read_folder
from zeroshot.models.registry import (
    MODELS,
    OPENAI_NAMES,
    OPENAI_PREPROCESS,
    Source,
    _row_preprocess,
    canonical_name,
    find_tag,
    release_of,
    unknown_name_message,
)
from zeroshot.paths import HF_PREFIX


def check_name(name_or_path: str | os.PathLike) -> str:
    """What kind of name this is (hf_hub, openai, openclip_tag, path), or a clear error; nothing is downloaded,
    so a typo fails before any data is read or any weights are fetched."""
    text = str(name_or_path)
    if text.startswith(HF_PREFIX):
        return "hf_hub"
    if canonical_name(text) is not None:
        return "openai"
    if find_tag(text) is not None:
        return "openclip_tag"
    path = Path(text).expanduser()
    if path.exists():
        return "path"
    looks_like_path = path.suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") or path.is_absolute() or text.startswith((".", "~"))
    if looks_like_path:
        raise MissingFileError(f"Checkpoint {path} does not exist. Give an existing file or model folder, or a name: "
                                f"{', '.join(MODELS)}, ARCH/TAG (see `zeroshot models`) or hf-hub:ORG/REPO")
    raise ConfigError(unknown_name_message(text))


def resolve(name_or_path: str | os.PathLike, download_root: str | Path | None = None) -> Source:
    text = str(name_or_path)
    kind = check_name(text)
    if kind == "hf_hub":
        return _hub(text[len(HF_PREFIX):], download_root)
    if kind == "openai":
        return _openai(canonical_name(text), download_root)
    if kind == "openclip_tag":
        return _tag(*find_tag(text), download_root)
    path = Path(text).expanduser()
    if path.is_dir():
        return read_folder(path)
    return Source("file", path.name, str(path.resolve()), weights=path)


def _openai(name: str, download_root) -> Source:
    from zeroshot.files import download

    url, sha = MODELS[name]
    arch = OPENAI_NAMES[name]
    return Source("openai", f"{arch}/openai", url, weights=download(url, sha, download_root), release=f"{arch}/openai",
                  activation="quick_gelu", activation_from=f"OpenAI's {name} release",
                  preprocess=dict(OPENAI_PREPROCESS), preprocess_from=f"OpenAI's {name} release")


def _tag(arch: str, tag: str, download_root) -> Source:
    from zeroshot.files import download
    from zeroshot.models.config import openclip_models

    row = registry.pretrained_tags()[(arch, tag)]
    if tag == "openai":
        openai = canonical_name(arch.removesuffix("-quickgelu"))
        if openai:
            return _openai(openai, download_root)
    common = dict(release=release_of(arch, tag), openclip_cfg=openclip_models().get(arch), activation=row["activation"],
                  activation_from=f"open_clip's registry for {arch}/{tag}", preprocess=_row_preprocess(row),
                  preprocess_from=f"open_clip's registry for {arch}/{tag}")
    if row["hf_hub"]:
        org, name, filename = (row["hf_hub"].split("/", 2) + [""])[:3]  # 'org/repo/' or 'org/repo/file.bin'
        repo = f"{org}/{name}"
        weights, revision = _hub_weights(repo, None, filename or None, download_root)
        return Source("openclip_tag", f"{arch}/{tag}", f"hf-hub:{repo}", weights=weights, revision=revision, **common)
    url = row["url"]
    prefix = Path(url).stem.split("-")[-1] if "mlfoundations" in url else None  # open_clip names files by sha prefix
    return Source("openclip_tag", f"{arch}/{tag}", url, weights=download(url, None, download_root, sha256_prefix=prefix), **common)


# ------------------------------------------------------------------------------------------- folders
