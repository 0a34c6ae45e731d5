"""Models beyond the CLIP family run through their reference library, behind zeroshot's model interface.

SigLIP and SigLIP2, EVA, ConvNeXt, CoCa, MobileCLIP, CLIPA with timm towers (open_clip), and transformers'
SigLIP and ALIGN have towers zeroshot's own model code does not implement. They load through the
library's public API, with the library's own tokenizer and preprocessing, as optional extras:
`pip install "zeroshot[open_clip]"` or `"zeroshot[transformers]"`. The wrapper gives every command what
zeroshot's CLIP gives it: encode_image, encode_text(tokens), tokenize(texts), transform, logit_scale,
logit_bias (SigLIP's sigmoid scoring), embed_dim, and `architecture` for the record.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import torch
from torch import nn

from zeroshot.errors import CheckpointError, ConfigError
from zeroshot.models.precision import DTYPES


class NeedsBackend(Exception):
    def __init__(self, backend: str, why: str):
        super().__init__(f"needs the {backend} backend ({why})")
        self.backend, self.why = backend, why


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(f"this model needs the {extra} backend, which is not installed: "
                              f'pip install "zeroshot[{extra}]"') from None


class BackendModel(nn.Module):
    """A reference library's model with zeroshot's interface. `encode_text` takes the token ids `tokenize` made."""

    def __init__(self, inner: nn.Module, image_fn, text_fn, tokenize, transform, *, architecture: str, precision: str):
        super().__init__()
        self.inner = inner
        self._image_fn, self._text_fn, self.tokenize, self.transform = image_fn, text_fn, tokenize, transform
        self.architecture, self.precision = architecture, precision
        scale = getattr(inner, "logit_scale", None)
        self.logit_scale = scale if scale is not None else nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.logit_bias = getattr(inner, "logit_bias", None)
        self._embed_dim: int | None = None

    @property
    def embed_dim(self) -> int:
        """The feature width, found by encoding one prompt the first time it is needed."""
        if self._embed_dim is None:
            with torch.inference_mode():
                self._embed_dim = int(self.encode_text(self.tokenize(["a"])).shape[-1])
        return self._embed_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.inner.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.inner.parameters()).device

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self._image_fn(image.to(self.device, self.dtype))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._text_fn(tokens.to(self.device))


def _features(out) -> torch.Tensor:
    return out.pooler_output if hasattr(out, "pooler_output") else out


class HFImageTransform:
    """transformers' image processor as a PIL -> [3, H, W] transform (its repr keys the feature cache)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"{type(self.processor).__name__}({json.dumps(self.processor.to_dict(), sort_keys=True, default=str)})"


class HFTokenize:
    """transformers' tokenizer to a LongTensor, padded as the model was trained (SigLIP: max_length, no mask)."""

    def __init__(self, tokenizer, max_length: int, pad_to_max: bool):
        self.tokenizer, self.max_length, self.pad_to_max = tokenizer, max_length, pad_to_max

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = self.tokenizer(list(texts), padding="max_length" if self.pad_to_max else "longest", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return out["input_ids"]


def _transformers(src, device: torch.device, precision: str) -> BackendModel:
    transformers = _import("transformers", "transformers")
    folder = src.folder
    kind = (src.hf_config or {}).get("model_type", "?")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), dtype=DTYPES[precision],
                                                       trust_remote_code=False).to(device).eval()
    except (ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{src.label}: transformers could not build its {kind!r} model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise CheckpointError(f"{src.label} holds a transformers {type(model).__name__} (model_type {kind!r}), not an "
                              "image-text model with get_image_features/get_text_features (CLIP, SigLIP, ALIGN, ...)")
    # SigLIP was trained on text padded to max_length with no attention mask; padding any other way is the
    # known cause of "SigLIP scores several points below the paper"
    siglip = kind.startswith("siglip")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    text_cfg = getattr(model.config, "text_config", model.config)
    max_length = getattr(text_cfg, "max_position_embeddings", None) or tokenizer.model_max_length
    pad_id = tokenizer.pad_token_id

    def text_fn(ids: torch.Tensor) -> torch.Tensor:
        if siglip or pad_id is None:
            return _features(model.get_text_features(input_ids=ids))
        return _features(model.get_text_features(input_ids=ids, attention_mask=(ids != pad_id).long()))

    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
    return BackendModel(model, lambda x: _features(model.get_image_features(pixel_values=x)), text_fn,
                        HFTokenize(tokenizer, max_length, pad_to_max=siglip), HFImageTransform(processor),
                        architecture=f"transformers {type(model).__name__} ({kind})", precision=precision)


@contextmanager
def no_code_prompt(label: str):
    """transformers asks on the terminal whether to run a repo's custom code when a caller (open_clip's HF text
    tower) leaves trust_remote_code unset; with its prompt timeout at 0 it refuses at once and reads no stdin."""
    try:
        import transformers.dynamic_module_utils as dyn
    except ImportError:  # no transformers: nothing can prompt
        yield
        return
    saved, dyn.TIME_OUT_REMOTE_CODE = getattr(dyn, "TIME_OUT_REMOTE_CODE", 15), 0
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise CheckpointError(f"{label} needs custom code from the Hub to load; zeroshot never runs code from a "
                              "model. Use a model whose text tower transformers ships.") from None
    finally:
        dyn.TIME_OUT_REMOTE_CODE = saved


def _open_clip(src, device: torch.device, precision: str) -> BackendModel:
    open_clip = _import("open_clip", "open_clip")
    if src.folder is not None:  # open_clip's Hub layout, local or from the Hub cache
        name, pretrained = f"local-dir:{src.folder}", None
        arch = src.label
    else:  # an ARCH/TAG whose weights were fetched into the cache
        name, pretrained = src.label.split("/")[0], str(src.weights)
        arch = name
    with no_code_prompt(src.label):  # open_clip's HF text towers call transformers without trust_remote_code
        model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, precision=precision,
                                                                    device=device)
    from zeroshot.models.tokenizer import LazyTokenizer

    tokenizer = LazyTokenizer(lambda: open_clip.get_tokenizer(name), f"of open_clip's {arch}")
    return BackendModel(model.eval(), model.encode_image, model.encode_text, tokenizer, transform,
                        architecture=f"open_clip {arch}", precision=precision)


BACKENDS = {"open_clip": _open_clip, "transformers": _transformers}


def load_backend(backend: str, src, device: torch.device, precision: str) -> BackendModel:
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}. Choose one of: zeroshot, {', '.join(BACKENDS)}")
    if backend == "transformers" and src.folder is None:
        raise CheckpointError(f"{src.label}: the transformers backend loads model folders (config.json + weights)")
    model = BACKENDS[backend](src, device, precision)
    model.requires_grad_(False)
    return model
