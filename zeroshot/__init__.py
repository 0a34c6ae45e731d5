"""zeroshot: zero-shot image classification with CLIP-family models, feature-exact with their reference code.

The public API mirrors `clip`: `load`, `tokenize`, `available_models` and `build_classifier`, plus what a
`clip.load` user reaches for next: `get_tokenizer(model)`, `logits` and `probabilities` (the model's own scale,
bias and softmax or sigmoid). They are imported on first use, so `import zeroshot` (and every `--help`) starts without loading torch.
"""
from __future__ import annotations

__version__ = "0.2.0"
__all__ = ["load", "tokenize", "get_tokenizer", "available_models", "build_classifier", "build_class_classifier",
           "read_descriptions", "map_descriptions", "class_prompts", "logits", "probabilities", "PromptLab"]

_API = {
    "load": "zeroshot.models.loader",
    "available_models": "zeroshot.models.registry",
    "tokenize": "zeroshot.models.tokenizer",
    "get_tokenizer": "zeroshot.classifier",
    "build_classifier": "zeroshot.classifier",
    "build_class_classifier": "zeroshot.classifier",
    "read_descriptions": "zeroshot.prompts.descriptions",
    "map_descriptions": "zeroshot.prompts.descriptions",
    "class_prompts": "zeroshot.prompts.descriptions",
    "logits": "zeroshot.classifier",
    "probabilities": "zeroshot.classifier",
    "PromptLab": "zeroshot.lab",
}


def __getattr__(name: str):
    import importlib

    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    try:  # submodules, e.g. zeroshot.models, as a regular package would give them after import
        return importlib.import_module(f"zeroshot.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'zeroshot' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
