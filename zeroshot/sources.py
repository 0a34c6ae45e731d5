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
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, ConfigError, MissingFileError

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

PRETRAINED = Path(__file__).with_name("reference") / "openclip_pretrained.csv"
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}
HF_PREFIX = "hf-hub:"


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


def unknown_name_message(text: str) -> str:
    names = list(MODELS) + [f"{a}/{t}" for a, t in pretrained_tags()]
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    if "/" in text and not close:  # an unknown tag for a known architecture: list that architecture's tags
        arch = re.split(r"[/:]", text)[0].lower()
        close = [f"{a}/{t}" for a, t in pretrained_tags() if a.lower() == arch][:8]
    hint = f" Closest: {', '.join(close)}." if close else ""
    return (f"Unknown model {text!r}.{hint} Name one of OpenAI's ({', '.join(MODELS)}), an open_clip ARCH/TAG "
            "(`python -m zeroshot models` lists them), hf-hub:ORG/REPO, or a path to a checkpoint file or model folder.")


def _openai(name: str, download_root) -> Source:
    from .download import download

    url, sha = MODELS[name]
    arch = _OPENAI[name][2]
    return Source("openai", f"{arch}/openai", url, weights=download(url, sha, download_root), release=f"{arch}/openai",
                  activation="quick_gelu", activation_from=f"OpenAI's {name} release",
                  preprocess=dict(OPENAI_PREPROCESS), preprocess_from=f"OpenAI's {name} release")


def _tag(arch: str, tag: str, download_root) -> Source:
    from .architecture import openclip_models
    from .download import download

    row = pretrained_tags()[(arch, tag)]
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

OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Could not read {path} as JSON ({e}); the model folder is damaged: download it again.") from None


def read_folder(folder: Path, label: str | None = None, location: str | None = None, revision: str | None = None) -> Source:
    """A model folder: open_clip's Hub layout, or a transformers save_pretrained folder."""
    if (folder / "open_clip_config.json").is_file():
        cfg = _json(folder / "open_clip_config.json")
        if "model_cfg" not in cfg:
            raise CheckpointError(f"{folder / 'open_clip_config.json'} has no model_cfg; the open_clip folder is damaged.")
        weights = _first(folder, OPENCLIP_WEIGHTS)
        model_cfg = cfg["model_cfg"]
        pre = cfg.get("preprocess_cfg") or {}
        preprocess = {k: pre[k] for k in ("mean", "std", "interpolation", "resize_mode", "size") if k in pre}
        if "size" in preprocess:
            from .transforms import square_size

            preprocess["size"] = square_size(preprocess["size"], f"{folder / 'open_clip_config.json'} (preprocess_cfg.size)")
        release = _hub_release(location)
        return Source("openclip_folder", label or folder.name, location or str(folder.resolve()), weights=weights,
                      release=release, revision=revision, openclip_cfg=model_cfg, preprocess=preprocess,
                      preprocess_from=f"{folder.name}/open_clip_config.json" if preprocess else "",
                      activation="quick_gelu" if model_cfg.get("quick_gelu") else None,
                      activation_from=f"{folder.name}/open_clip_config.json",
                      folder=folder)
    if (folder / "config.json").is_file():
        cfg = _json(folder / "config.json")
        kind = cfg.get("model_type") or (cfg.get("architectures") or ["?"])[0]
        weights = _first(folder, HF_WEIGHTS)
        preprocess, pre_from = {}, ""
        if (folder / "preprocessor_config.json").is_file():
            preprocess, pre_from = hf_preprocess(_json(folder / "preprocessor_config.json")), f"{folder.name}/preprocessor_config.json"
        return Source("transformers_folder", label or folder.name, location or str(folder.resolve()), weights=weights,
                      release=_hub_release(location), revision=revision, hf_config=cfg, preprocess=preprocess,
                      preprocess_from=pre_from, folder=folder,
                      activation_from=f"{folder.name}/config.json (model_type {kind})")
    found = sorted(p.name for p in folder.iterdir())[:12]
    raise CheckpointError(f"{folder} holds no model this loader reads: expected open_clip_config.json (open_clip's Hub layout) "
                          f"or config.json (a transformers folder); found {found or 'nothing'}.")


def _first(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise CheckpointError(f"{folder} has a config but no weights: expected one of {', '.join(names)}.")


_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos"}


def hf_preprocess(p: dict) -> dict:
    """transformers' CLIPImageProcessor settings in open_clip's terms."""
    size = p.get("size")
    crop = p.get("crop_size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = crop.get("height") if isinstance(crop, dict) else crop
    out = {"mean": p.get("image_mean", OPENAI_PREPROCESS["mean"]), "std": p.get("image_std", OPENAI_PREPROCESS["std"]),
           "interpolation": _RESAMPLE.get(p.get("resample", 3), "bicubic"),
           "resize_mode": "shortest" if p.get("do_center_crop", True) and shortest else "squash"}
    if crop or shortest:
        out["size"] = crop or shortest
    return out


# ------------------------------------------------------------------------------------------- the Hub

def _hub_release(location: str | None) -> str | None:
    """An hf-hub repo that open_clip's registry names is that release (e.g. laion/CLIP-ViT-B-32-laion2B-s34B-b79K)."""
    if not location or not location.startswith(HF_PREFIX):
        return None
    repo = location[len(HF_PREFIX):].split("@")[0].strip("/")
    for (arch, tag), row in pretrained_tags().items():
        if "/".join(row["hf_hub"].split("/")[:2]).lower() == repo.lower():
            return release_of(arch, tag)
    return None


def _hub_error(repo: str, revision: str | None, e: Exception) -> Exception:
    from huggingface_hub import errors

    where = f"hf-hub:{repo}" + (f"@{revision}" if revision else "")
    offline = isinstance(e, errors.LocalEntryNotFoundError) or "offline" in str(e).lower()
    if isinstance(e, errors.RevisionNotFoundError):
        return CheckpointError(f"{where}: the Hub has no revision {revision!r} of {repo}; give a branch, tag or commit that exists.")
    if isinstance(e, (errors.RepositoryNotFoundError, errors.GatedRepoError)) and not offline:
        return CheckpointError(f"{where}: the Hub has no repository {repo!r} (or it is private or gated: log in with `hf auth login`).")
    if offline:
        return CheckpointError(
            f"{where} is not in the Hugging Face cache and this machine cannot reach the Hub (offline or HF_HUB_OFFLINE=1). "
            f"On a machine with internet run `hf download {repo} --local-dir DIR`, copy DIR here and load the folder: "
            "model.checkpoint=DIR (or zeroshot.load('DIR')).")
    return CheckpointError(f"{where}: could not download from the Hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}).")


class HubRepo:
    """One hub repo at one revision, read through huggingface_hub's cache (HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT).

    Once the Hub proves unreachable, the remaining files are looked up in the cache only: huggingface_hub
    retries each unreachable request for about half a minute, and a folder is several files.
    """

    def __init__(self, repo: str, revision: str | None, download_root):
        self.repo, self.revision = repo, revision
        self.cache = Path(download_root) / "hf" if download_root else None
        self.unreachable: Exception | None = None

    def file(self, filename: str) -> Path | None:
        """The file's local path; None when the repo has no such file, or (Hub unreachable) none is cached."""
        from huggingface_hub import errors, hf_hub_download

        try:
            return Path(hf_hub_download(self.repo, filename, revision=self.revision, cache_dir=self.cache,
                                        local_files_only=self.unreachable is not None))
        except errors.LocalEntryNotFoundError as e:  # checked first: it is also an EntryNotFoundError
            self.unreachable = self.unreachable or e
            return None
        except errors.EntryNotFoundError:
            return None
        except Exception as e:  # missing repos and revisions, server errors: say which
            raise _hub_error(self.repo, self.revision, e) from None

    def first(self, names: tuple[str, ...]) -> Path | None:
        return next((path for n in names if (path := self.file(n)) is not None), None)

    def fail_if_unreachable(self) -> None:
        if self.unreachable is not None:
            raise _hub_error(self.repo, self.revision, self.unreachable)


def _revision_of(path: Path) -> str | None:
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def _hub_weights(repo: str, revision: str | None, filename: str | None, download_root) -> tuple[Path, str | None]:
    names = (filename,) if filename else OPENCLIP_WEIGHTS
    if filename and filename.endswith((".bin", ".pth")):
        names = (filename[:-4] + ".safetensors", filename)
    hub = HubRepo(repo, revision, download_root)
    if (path := hub.first(names)) is not None:
        return path, _revision_of(path)
    hub.fail_if_unreachable()
    raise CheckpointError(f"hf-hub:{repo} has none of {', '.join(names)}.")


def _hub(spec: str, download_root) -> Source:
    repo, _, revision = spec.partition("@")
    repo, revision = repo.strip("/"), revision or None
    if repo.count("/") != 1:
        raise ConfigError(f"hf-hub:{spec}: expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    hub = HubRepo(repo, revision, download_root)
    location = f"{HF_PREFIX}{repo}"
    for config_name, weight_names in (("open_clip_config.json", OPENCLIP_WEIGHTS), ("config.json", HF_WEIGHTS)):
        config = hub.file(config_name)
        if config is None:
            continue
        if config_name == "config.json":
            hub.file("preprocessor_config.json")  # optional: without it the default preprocessing is used and said
        if hub.first(weight_names) is None:
            hub.fail_if_unreachable()
        commit = _revision_of(config)
        label = f"{location}@{commit[:10]}" if commit else location
        src = read_folder(config.parent, label=label, location=location + (f"@{revision}" if revision else ""), revision=commit)
        src.kind = "hf_hub"
        return src
    hub.fail_if_unreachable()
    raise CheckpointError(f"{location} holds no CLIP model this loader reads: it has neither open_clip_config.json "
                          "(open_clip's layout) nor config.json (a transformers model).")
