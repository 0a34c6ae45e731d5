"""Where things live: the data that ships with zeroshot (Hydra configs, prompt sets, reference tables, CLIP's
BPE vocabulary), the cache, and the `hf-hub:` prefix that names a Hugging Face Hub location.

In a source checkout (and an editable install) the configs and prompts are the top-level `configs/` and
`prompts/` folders; a wheel carries the same folders inside the package, as `zeroshot/_data/configs` and
`zeroshot/_data/prompts`. The reference tables (`zeroshot/reference/`) are package data either way.
"""
from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REFERENCE = _HERE / "reference"  # facts as data: release tables, wnid subsets, published numbers
BPE_VOCAB = _HERE / "bpe_simple_vocab_16e6.txt.gz"
TRACKERS_DIR = "trackers"  # <results_dir>/trackers/: the loggers' stores (configs/logger), never read as runs
HF_PREFIX = "hf-hub:"  # hf-hub:ORG/REPO[@REVISION] names a Hub repo, for weights and for webdatasets


def _data_dir(name: str) -> Path:
    packaged = _HERE / "_data" / name
    return packaged if packaged.is_dir() else _HERE.parent / name


def config_dir() -> Path:
    return _data_dir("configs")


def prompts_dir() -> Path:
    return Path(os.environ.get("ZEROSHOT_PROMPTS_DIR") or _data_dir("prompts"))


def default_cache_dir() -> Path:
    """Downloads, feature caches and sha256 records: $ZEROSHOT_CACHE, else ~/.cache/zeroshot."""
    return Path(os.environ.get("ZEROSHOT_CACHE") or Path.home() / ".cache" / "zeroshot")



BUILD_COMMIT = _HERE / "_commit.txt"  # written by setup.py's build step: the commit a wheel or install was built from


def git_commit() -> str | None:
    """The commit this code is: the checkout's HEAD where zeroshot runs from a git checkout (an editable install),
    else the one recorded when the package was built (`pip install .`, a wheel), else None (an sdist's build)."""
    import subprocess

    root = _HERE.parent
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():  # this checkout, not a repo around site-packages
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    if BUILD_COMMIT.is_file():
        return BUILD_COMMIT.read_text().strip() or None
    return None
