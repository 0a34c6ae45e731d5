"""Where the data that ships with zeroshot lives: the Hydra configs and the prompt sets.

In a source checkout (and an editable install) they are the top-level `configs/` and `prompts/` folders;
a wheel carries the same folders inside the package, as `zeroshot/_data/configs` and `zeroshot/_data/prompts`.
"""
from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    packaged = _HERE / "_data" / name
    return packaged if packaged.is_dir() else _HERE.parent / name


def config_dir() -> Path:
    return _data_dir("configs")


def prompts_dir() -> Path:
    return Path(os.environ.get("ZEROSHOT_PROMPTS_DIR") or _data_dir("prompts"))
