"""The release table: every set of published weights zeroshot can name, and what each one is.

One table, `zeroshot/reference/openclip_pretrained.csv` (generated from open_clip's registry by
tools/make_openclip_tables.py): each ARCH/TAG with its Hub repo or URL, the activation it was trained with and
its preprocessing. OpenAI's nine releases are its `openai` rows; the names OpenAI gave them ("ViT-B/32",
`clip.available_models()`) are the one fact the table lacks, so they live here, and their URLs and sha256s
come from the table (the sha256 is a path segment of each URL).
Also here: `Source`, what is known about a set of weights once a name or path is resolved (models/sources.py),
and `family_fields`, whether zeroshot's own model code builds an open_clip architecture (no torch: `zeroshot
models` reads it too).
"""
from __future__ import annotations

import csv
import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from zeroshot.paths import REFERENCE

PRETRAINED = REFERENCE / "openclip_pretrained.csv"
# OpenAI's names for its releases -> the open_clip architecture whose `openai` row holds the weights
OPENAI_NAMES = {"RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
                "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336"}
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}


@functools.lru_cache()
def pretrained_tags() -> dict[tuple[str, str], dict]:
    with open(PRETRAINED, newline="") as f:
        return {(r["arch"], r["tag"]): r for r in csv.DictReader(f)}


def _openai_release(arch: str) -> tuple[str, str]:
    """(URL, sha256) of OpenAI's weights for an architecture, from its `openai` row of the table."""
    url = pretrained_tags()[(arch, "openai")]["url"]
    sha = url.rstrip("/").split("/")[-2]
    assert re.fullmatch(r"[0-9a-f]{64}", sha), f"no sha256 in OpenAI's URL for {arch}: {url}"
    return url, sha


# OpenAI name -> (URL, sha256)
MODELS: dict[str, tuple[str, str]] = {name: _openai_release(arch) for name, arch in OPENAI_NAMES.items()}
# A file with one of these hashes is that OpenAI release, whatever it is called on disk.
OPENAI_SHA256 = {sha: f"{OPENAI_NAMES[name]}/openai" for name, (_, sha) in MODELS.items()}


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


def family_fields(model_cfg: dict) -> dict | None:
    """CLIPConfig fields for an open_clip model config that zeroshot's own model code builds exactly.

    None for the rest (timm or HF towers, CoCa, custom attention blocks): those need a reference backend.
    """
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    beyond = (v.get("timm_model_name") or t.get("hf_model_name") or "multimodal_cfg" in model_cfg
              or v.get("attentional_pool") or v.get("pos_embed_type", "learnable") != "learnable"
              or t.get("embed_cls") or t.get("use_pad_mask") or t.get("proj_type", "linear") != "linear"
              or any(c.get(k) for c in (v, t) for k in ("block_type", "qk_norm", "scaled_cosine_attn", "scale_heads",
                                                          "scale_attn_inner", "scale_attn", "scale_fc"))
              or not isinstance(v.get("image_size", 224), int)
              or not isinstance(v.get("layers", 12), (list, tuple)) and not isinstance(v.get("patch_size", 16), int))
    if beyond:
        return None
    eps = {(c.get("norm_kwargs") or {}).get("eps", 1e-5) for c in (v, t)}
    tanh = {(c.get("act_kwargs") or {}).get("approximate") for c in (v, t)}
    if len(eps) > 1 or len(tanh) > 1:
        return None
    layers = v.get("layers", 12)
    resnet = isinstance(layers, (list, tuple))
    pool = t.get("pool_type", "argmax")
    return dict(
        embed_dim=model_cfg["embed_dim"],
        image_resolution=v.get("image_size", 224),
        vision_layers=tuple(layers) if resnet else layers,
        vision_width=v.get("width", 768),
        vision_patch_size=None if resnet else v.get("patch_size", 16),
        vision_head_width=v.get("head_width", 64),
        vision_mlp_ratio=float(v.get("mlp_ratio", 4.0)),
        vision_ln_pre=not v.get("no_ln_pre", False),
        vision_pool=v.get("pool_type", "tok"),
        vision_ln_after_pool=bool(v.get("final_ln_after_pool", False)),
        vision_layer_scale=v.get("ls_init_value") is not None,
        context_length=t.get("context_length", 77),
        vocab_size=t.get("vocab_size", 49408),
        transformer_width=t.get("width", 512),
        transformer_heads=t.get("heads", 8),
        transformer_layers=t.get("layers", 12),
        text_mlp_ratio=float(t.get("mlp_ratio", 4.0)),
        text_pool=pool,
        text_causal=not t.get("no_causal_mask", False),
        text_proj_bias=bool(t.get("proj_bias", False)),
        text_layer_scale=t.get("ls_init_value") is not None,
        eos_id=t.get("eos_id", 2) if pool == "eos" else 49407,
        activation="quick_gelu" if model_cfg.get("quick_gelu") else ("gelu_tanh" if tanh == {"tanh"} else "gelu"),
        ln_eps=eps.pop(),
        logit_bias="init_logit_bias" in model_cfg,
    )
