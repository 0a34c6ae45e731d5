"""zeroshot: zero-shot image classification with CLIP, feature-exact with OpenAI's `clip` package."""
from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

import torch

from .classifier import build_classifier
from .pretrained import available_models, load_model
from .tokenizer import tokenize
from .transforms import image_transform

__all__ = ["load", "tokenize", "available_models", "build_classifier"]


def load(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    download_root: str | Path | None = None,
):
    """Load a CLIP model and its preprocessing, like `clip.load`.

    `name_or_path` is one of `available_models()` (dash spellings such as "ViT-B-32" work too), downloaded
    into the verified cache (`~/.cache/zeroshot`, or $ZEROSHOT_CACHE, or `download_root`), or a path to a
    checkpoint file: OpenAI's TorchScript archive, a state dict, an open_clip checkpoint or a .safetensors file.
    `precision` is fp32 on the CPU; fp32, fp16 (the default there, as in clip.load) or bf16 on CUDA.

    Returns (model, preprocess), where preprocess turns a PIL image into a normalized [3, n_px, n_px] tensor.
    """
    model = load_model(name_or_path, device, precision, download_root)
    return model, image_transform(model.image_resolution)
