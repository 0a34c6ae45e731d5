"""Model folders and the Hugging Face Hub: open_clip's Hub layout and transformers' save_pretrained folders read
into a Source, and hf-hub:ORG/REPO[@REVISION] fetched through huggingface_hub (its cache, HF_HUB_OFFLINE,
HF_ENDPOINT), with one clear error for offline, missing and gated repos.
"""
from __future__ import annotations

import json
from pathlib import Path

from zeroshot.errors import CheckpointError, ConfigError
from zeroshot.models import (
    registry,  # through the module: its tables can be extended (tests do)
)
from zeroshot.models.registry import OPENAI_PREPROCESS, Source, release_of
from zeroshot.paths import HF_PREFIX

OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Could not read {path} as JSON ({e}); the model folder is damaged: download it again.") from None


# the files whose `auto_map` makes transformers import Python from the folder (its "custom code")
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                "image_processor_config.json")


def refuse_custom_code(folder: Path) -> None:
    """A model folder never runs code: one whose configs map classes to its own .py files (`auto_map`) is
    refused here, before any library sees it (the loaders also pass trust_remote_code=False)."""
    for name in CODE_CONFIGS:
        path = folder / name
        if not path.is_file():
            continue
        cfg = _json(path)
        auto_map = cfg.get("auto_map") if isinstance(cfg, dict) else None
        if auto_map:
            entry = next(iter(auto_map.items())) if isinstance(auto_map, dict) else ("auto_map", auto_map)
            raise CheckpointError(f"{folder} needs custom code to load ({name} auto_map: {entry[0]} -> {entry[1]}); "
                                  "zeroshot never runs code from a model folder. Use a model whose classes "
                                  "transformers or open_clip ship.")


def read_folder(folder: Path, label: str | None = None, location: str | None = None, revision: str | None = None) -> Source:
    """A model folder: open_clip's Hub layout, or a transformers save_pretrained folder."""
    refuse_custom_code(folder)
    if (folder / "open_clip_config.json").is_file():
        cfg = _json(folder / "open_clip_config.json")
        if "model_cfg" not in cfg:
            raise CheckpointError(f"{folder / 'open_clip_config.json'} has no model_cfg; the open_clip folder is damaged.")
        weights = _first(folder, OPENCLIP_WEIGHTS)
        model_cfg = cfg["model_cfg"]
        pre = cfg.get("preprocess_cfg") or {}
        preprocess = {k: pre[k] for k in ("mean", "std", "interpolation", "resize_mode", "size") if k in pre}
        if "size" in preprocess:
            from zeroshot.models.transforms import square_size

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
    for (arch, tag), row in registry.pretrained_tags().items():
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
