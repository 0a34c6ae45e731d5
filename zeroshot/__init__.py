"""zeroshot: zero-shot image classification with CLIP-family models, feature-exact with their reference code.

The public API mirrors `clip`: `load`, `tokenize`, `available_models` and `build_classifier`. They are
imported on first use, so `import zeroshot` (and every `--help`) starts without loading torch.
"""
from __future__ import annotations

__version__ = "0.2.0"
__all__ = ["load", "tokenize", "available_models", "build_classifier"]

_API = {
    "load": "zeroshot.pretrained",
    "available_models": "zeroshot.pretrained",
    "tokenize": "zeroshot.tokenizer",
    "build_classifier": "zeroshot.classifier",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zeroshot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
