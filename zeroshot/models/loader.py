"""Loading a CLIP: resolve the name, read the weights, settle the config, and record exactly what was loaded.

`load_model` returns a model whose `identity` says which weights these are (release, hub repo and commit,
or file), their sha256, the architecture, the activation and where each fact came from, the backend,
and the preprocessing. Facts the weights do not carry are taken from the user, else assumed and printed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from zeroshot.errors import ArchitectureError, CheckpointError, ConfigError
from zeroshot.files import file_sha256
from zeroshot.log import log
from zeroshot.models.checkpoint import from_transformers, is_torchscript, read_file, to_openai_layout
from zeroshot.models.config import (
    architecture_name,
    base_name,
    build_config,
    empty_model,
    hf_fields,
    load_weights,
)
from zeroshot.models.layers import ACTIVATIONS
from zeroshot.models.precision import (
    DTYPES,
    PRECISIONS,
    convert_weights,
    resolve_precision,
)
from zeroshot.models.registry import (
    MODELS,
    OPENAI_PREPROCESS,
    OPENAI_SHA256,
    Source,
    canonical_name,
    family_fields,
)
from zeroshot.models.sources import resolve
from zeroshot.models.transforms import LazyTransform, Preprocess, image_transform
from zeroshot.paths import default_cache_dir

__all__ = ["load", "load_model", "canonical_name", "MODELS", "CheckpointError",
           "default_cache_dir", "resolve_precision", "PRECISIONS"]

@dataclass
class Identity:
    """Which weights a model is, and where each fact about it came from."""

    label: str  # what reports call it: release name, hub repo@commit, or file name
    release: str | None  # "ARCH/TAG" of a published release, where known
    architecture: str
    activation: str
    activation_from: str
    source: str  # openai | openclip_tag | hf_hub | file | openclip_folder | transformers_folder
    location: str
    revision: str | None
    checkpoint: str
    sha256: str
    backend: str = "zeroshot"
    preprocess: dict = field(default_factory=dict)
    preprocess_from: str = ""
    assumed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _note(message: str) -> None:
    log.warning(message)


def _same_arch(expected: str, actual: str) -> bool:
    def key(s: str) -> str:
        return base_name(s).lower().replace("/", "-").replace("@", "-").removesuffix("px")

    openai = canonical_name(expected)
    if openai:  # "ViT-B/32" in a model config means the ViT-B-32 architecture
        from zeroshot.models.registry import OPENAI_NAMES

        expected = OPENAI_NAMES[openai]
    return key(expected) == key(actual)


def _told_fields(src: Source) -> dict | None:
    """CLIPConfig fields from the config that came with the weights; None when there is none.

    Raises NeedsBackend when that config describes a model beyond zeroshot's own code.
    """
    from zeroshot.models.backends import NeedsBackend

    if src.hf_config is not None:
        kind = src.hf_config.get("model_type")
        if kind != "clip":
            raise NeedsBackend("transformers", f"model_type {kind!r}")
        return hf_fields(src.hf_config)
    if src.openclip_cfg is not None:
        f = family_fields(src.openclip_cfg)
        if f is None:
            raise NeedsBackend("open_clip", "a timm or HF tower, or a custom block")
        return f
    return None


def _state_dict(src: Source) -> dict[str, torch.Tensor]:
    sd = read_file(src.weights)
    return from_transformers(sd) if src.kind == "transformers_folder" else to_openai_layout(sd)


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu", precision: str | None = None,
               download_root: str | Path | None = None, *, activation: str | None = None, expect_arch: str | None = None,
               preprocess: dict | None = None, backend: str | None = None, hints: str = "cli"):
    """Load a model and record its identity (`model.identity`) and preprocessing (`model.preprocess_spec`).

    `activation` decides what a bare state dict cannot say (quick_gelu, gelu, gelu_tanh). `expect_arch`, from an
    explicit model config, must match what the weights are. `preprocess` overrides the checkpoint's settings.
    `hints`: whether what is assumed names the command line's settings ("cli") or zeroshot.load's ("python").
    """
    from zeroshot.models.backends import NeedsBackend

    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if activation is not None and activation not in ACTIVATIONS:
        raise ConfigError(f"Unknown activation {activation!r}. Choose one of: {', '.join(ACTIVATIONS)}")
    src, sha = _weights(name_or_path, download_root)
    try:
        if backend not in (None, "zeroshot"):
            raise NeedsBackend(backend, "asked for")
        told = _told_fields(src)
    except NeedsBackend as need:
        return _backend_model(need.backend, src, sha, device, precision, expect_arch)

    sd = _state_dict(src)
    _check_finite_weights(sd, src)
    try:
        config, assumed = build_config(sd, told)
    except ArchitectureError as e:
        raise CheckpointError(f"{src.weights} is not a CLIP model this loader understands ({e}).") from None
    act, act_from = _activation(activation, src, told, sha, assumed, hints)
    config.activation = act
    arch = architecture_name(config)
    _check_arch(expect_arch, arch, src)
    try:
        model = load_weights(empty_model(config), sd, where=str(src.weights))
    except ArchitectureError as e:
        raise CheckpointError(str(e)) from None

    spec, spec_from = _preprocess(src, config.image_resolution, preprocess, assumed, hints)
    for a in assumed:
        _note(f"{src.label}: assumed {a}")
    model.identity = Identity(src.label, src.release, arch, act, act_from, src.kind, src.location, src.revision,
                              str(src.weights), sha, "zeroshot", spec.as_dict(), spec_from, assumed)
    # built when the first image is decoded: a run on cached image features needs no torchvision
    model.preprocess_spec, model.transform = spec, LazyTransform(spec, image_transform, download_root)
    model.tokenize = _tokenizer(src, config)
    model.precision = precision
    model.requires_grad_(False).to(device=device)
    if precision != "fp32":
        convert_weights(model, DTYPES[precision])
    return model.eval()


def _weights(name_or_path: str | Path, download_root: str | Path | None) -> tuple[Source, str]:
    """Where the weights are (models.sources.Source, its release filled in from OpenAI's hashes) and their sha256."""
    src = resolve(name_or_path, download_root)
    if src.weights is None or not Path(src.weights).is_file():
        raise CheckpointError(f"{src.location}: no weights file was found.")
    sha = file_sha256(src.weights, download_root)
    src.release = src.release or OPENAI_SHA256.get(sha)
    return src, sha


def _backend_model(backend: str, src: Source, sha: str, device: torch.device, precision: str, expect_arch: str | None):
    """The model a reference library builds (models.backends), with its identity recorded."""
    from zeroshot.models.backends import load_backend

    model = load_backend(backend, src, device, precision)
    model.identity = Identity(src.label, src.release, model.architecture, "(the backend's own)", backend,
                              src.kind, src.location, src.revision, str(src.weights), sha, backend,
                              {"transform": repr(model.transform)}, f"{backend}'s own preprocessing")
    _check_arch(expect_arch, model.architecture, src)
    return model


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in t. A sum is NaN or inf when any term is, so a finite sum (one fast reduction, 15x quicker
    than isfinite's mask) answers for the whole tensor; a non-finite sum may be an overflow, so the mask decides."""
    total = t.sum(dtype=torch.float32 if t.element_size() < 4 else t.dtype)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(t).all())


def _check_finite_weights(sd: dict[str, torch.Tensor], src: Source) -> None:
    """A checkpoint with NaN or inf weights gives NaN features and a metrics.json of nonsense: name the tensor."""
    for name, t in sd.items():
        if t.is_floating_point() and not _all_finite(t):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{src.weights}: tensor {name!r} holds {bad} non-finite (NaN or inf) values of "
                                  f"{t.numel()}: the checkpoint is broken (a diverged run, or a damaged file)")


def _tokenizer(src: Source, config):
    """CLIP's BPE (zeroshot's own, exact) unless the weights' config names a Hugging Face tokenizer (CLIPA's BERT,
    MetaCLIP 2's XLM-V), which open_clip's get_tokenizer builds exactly as open_clip does."""
    from functools import partial

    from zeroshot.models.tokenizer import tokenize

    text_cfg = (src.openclip_cfg or {}).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        from zeroshot.models.backends import _import
        from zeroshot.models.tokenizer import LazyTokenizer

        name = f"local-dir:{src.folder}" if src.folder else src.label.split("/")[0]
        return LazyTokenizer(lambda: _import("open_clip", "open_clip").get_tokenizer(name),
                             f"{text_cfg['hf_tokenizer_name']} (open_clip's get_tokenizer({name!r}))")
    if config.vocab_size != 49408:
        from zeroshot.models.tokenizer import NoTokenizer

        return NoTokenizer(f"{src.label}: its text tower has a {config.vocab_size}-token vocabulary, not CLIP's BPE, and no "
                           "config names its tokenizer; load it with its open_clip config (the model folder, or ARCH/TAG)")
    return partial(tokenize, context_length=config.context_length)


# how to say what was assumed, in the caller's terms: settings on the command line, or zeroshot.load's arguments
HINTS = {
    "cli": {"activation": "pass model.activation=gelu", "preprocess": "override with model.preprocess.* "
            "(e.g. model.preprocess.resize_mode=squash)"},
    "python": {"activation": "pass zeroshot.load(..., activation='gelu')", "preprocess": "override with "
               "zeroshot.load(..., preprocess={'mean': [...], 'std': [...], 'resize_mode': ...})"},
}


def _activation(given: str | None, src: Source, told: dict | None, sha: str, assumed: list[str],
                hints: str = "cli") -> tuple[str, str]:
    """The activation and where it came from: the user, the release, the config, or an assumption (printed)."""
    known, known_from = src.activation, src.activation_from
    if known is None and told is not None:
        known, known_from = told["activation"], src.activation_from or "the config that came with the weights"
    if known is None and sha in OPENAI_SHA256:
        known, known_from = "quick_gelu", f"sha256 of OpenAI's {OPENAI_SHA256[sha]} release"
    if given is not None:
        if known is not None and known != given:
            _note(f"{src.label}: activation={given} as given, although {known_from} says {known}")
        return given, "given (model.activation)"
    if known is not None:
        return known, known_from
    what = ("a TorchScript archive that is not one of OpenAI's releases" if is_torchscript(Path(src.weights))
            else "a bare state dict")
    assumed.append(f"activation quick_gelu (OpenAI's): {what} does not say which activation it was trained with; "
                   f"if it was trained with open_clip's default GELU, {HINTS[hints]['activation']}")
    return "quick_gelu", "assumed"


def _check_arch(expected: str | None, actual: str, src: Source) -> None:
    if expected and not _same_arch(expected, actual):
        raise ArchitectureError(
            f"the model config names architecture {expected} but {src.label} is a {actual}: drop model=... and give "
            "only model.checkpoint=PATH (the checkpoint says what it is), or pick the model config that matches it")


def _preprocess(src: Source, resolution: int, override: dict | None, assumed: list[str],
                hints: str = "cli") -> tuple[Preprocess, str]:
    settings = dict(src.preprocess)
    origin = src.preprocess_from
    if not settings:
        settings = dict(OPENAI_PREPROCESS)
        if src.kind in ("file", "openclip_folder", "transformers_folder") and not (override and {"mean", "std"} <= set(override)):
            assumed.append("OpenAI's preprocessing (bicubic, shortest side + center crop, OpenAI's mean/std): "
                           f"the weights carry no preprocessing config; {HINTS[hints]['preprocess']}")
        origin = origin or "OpenAI's default"
    settings.setdefault("size", resolution)
    if override:
        settings.update({k: v for k, v in override.items() if v is not None})
        origin = f"{origin}, overridden by model.preprocess"
    return Preprocess(**{k: settings[k] for k in ("size", "mean", "std", "interpolation", "resize_mode") if k in settings}), origin


def load(name_or_path: str | Path, device: str | torch.device | None = None, *, precision: str | None = None,
         download_root: str | Path | None = None, activation: str | None = None, backend: str | None = None,
         preprocess: dict | None = None):
    """Load a model and its preprocessing, like `clip.load`: every name `eval` runs, through whatever runs it.

    `name_or_path`: one of `available_models()` (OpenAI's names, with dash spellings such as "ViT-B-32" too, and
    open_clip's "ARCH/TAG" releases), "hf-hub:ORG/REPO[@REVISION]", a checkpoint file (OpenAI's archive, a state
    dict, an open_clip checkpoint, .safetensors) or a model folder (open_clip's Hub layout, a transformers
    save_pretrained folder). Models beyond the CLIP family (SigLIP, EVA, ...) run through their reference library.
    `device`: CUDA when it is there, else the CPU (as clip.load). `precision`: fp32 on the CPU; fp16 (as clip.load)
    on CUDA, or bf16. `activation`: for a bare state dict that is not a known release (quick_gelu, gelu, gelu_tanh).
    `preprocess`: overrides of the checkpoint's preprocessing (size, mean, std, interpolation, resize_mode).

    Returns (model, preprocess): `preprocess` is the transform `eval` applies (PIL image -> [3, H, W] tensor).
    Score with `zeroshot.logits` / `zeroshot.probabilities`, which apply the model's own scale, bias and softmax
    or sigmoid; tokenize with `zeroshot.get_tokenizer(model)`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(name_or_path, device, precision, download_root, activation=activation, preprocess=preprocess,
                       backend=backend, hints="python")
    if isinstance(model.transform, LazyTransform):  # as clip.load: the transform itself (torchvision's Compose)
        model.transform = model.transform.materialize()
    return model, model.transform
