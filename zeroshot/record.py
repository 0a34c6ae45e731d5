"""Run records: who, what and which (the identity of the weights, the images and the prompts) for every command's
metrics.json, whether published numbers apply, and the run directories (fresh, never overwritten).

`with run_directory(base) as run:` is the one way a command makes its run directory and the one writer of
metrics.json (a runs.RunRecord, written last, marking the run complete); an error anywhere in the block removes
the half-written directory.
"""
from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from zeroshot import distributed as dist
from zeroshot.figures import drawing
from zeroshot.files import atomic_write, package_version
from zeroshot.paths import git_commit
from zeroshot.prompts.sets import prompts_hash
from zeroshot.runs import RunRecord

if TYPE_CHECKING:  # annotations only: the pipeline builds Setup, records only read it
    from zeroshot.pipeline import Setup


def dataset_label(cfg: DictConfig) -> str:
    """A readable name for the images: the dataset's, or for your own folder or CSV, that folder's or file's name."""
    d = cfg.dataset
    if d.kind in ("imagefolder", "csv", "wds", "hf", "selection_jsonl"):
        where = Path(str(d.get("path") or d.get("root") or "")).expanduser()
        return f"{d.name}:{where.stem if d.kind in ('csv', 'selection_jsonl') else where.name}"
    return d.name


def comparability(cfg: DictConfig, n_images: int, skipped: int) -> tuple[bool, str]:
    """Whether this run used its benchmark's canonical split and image count, so published numbers apply."""
    bench = cfg.dataset.get("benchmark")
    if not bench:
        return False, "no published benchmark for this dataset"
    split = cfg.dataset.split
    if split != bench.split:
        return False, f"split={split}; published numbers use split={bench.split}"
    if n_images != bench.n_images or skipped:
        return False, f"{n_images:,} of {bench.n_images:,} images"
    return True, ""


def run_record(cfg: DictConfig, s: Setup, n_images: int, skipped: int) -> dict:
    """Who, what and which: the identity of the weights, the images and the prompts, for every command's output."""
    ident = s.model.identity
    fp = s.dataset.fingerprint()
    comparable, why = comparability(cfg, n_images, skipped)
    bench = cfg.dataset.get("benchmark")
    phash = prompts_hash(s.classnames, s.prompts.templates)
    name, main = s.prompts.name, s.main_class_prompts
    if main is not None:  # class-specific prompts: their own identity (texts, mode, pattern, combination, aggregation)
        name, phash = main.name, main.digest
    if s.language and s.language.get("language_source"):  # prompts.language: the language and its source too
        phash = language_hash(phash, s.language["language"], s.language["language_source"])
    label_free = getattr(s, "label_free_identity", None)
    if label_free is not None:  # a weighted ensemble or CHiLS never shares a report row with the equal ensemble
        from zeroshot.label_free import combined_hash

        name, phash = f"{name}+{label_free['method']}", combined_hash(phash, label_free)
    return {
        "model": ident.label, "model_release": ident.release, "architecture": ident.architecture,
        "activation": ident.activation, "activation_from": ident.activation_from, "backend": ident.backend,
        "source": ident.source, "location": ident.location, "revision": ident.revision,
        "checkpoint": ident.checkpoint, "checkpoint_sha256": ident.sha256, "preprocess": ident.preprocess,
        "preprocess_from": ident.preprocess_from, "assumed": ident.assumed, "model_slug": model_slug(ident),
        "dataset": cfg.dataset.name, "dataset_label": dataset_label(cfg), "dataset_fingerprint": fp["digest"],
        "dataset_fingerprint_kind": fp["kind"], "dataset_root": fp["root"], "split": cfg.dataset.split,
        "benchmark": OmegaConf.to_container(bench, resolve=True) if bench else None,
        "comparable": comparable, "not_comparable_reason": why,
        "prompts": name, "prompts_hash": phash, "prompts_label": f"{name}#{phash[:8]}",
        # prompts.language: the language and its source (also in the prompts' name), what it left out
        "language": (s.language or {}).get("language"), "language_detail": s.language,
        "text_language": getattr(s.model, "text_language", None),  # the code the tokenizer took (NLLB's FLORES-200)
        # the templates' text, so a report can tell one protocol from another (WaffleCLIP's baseline: one template)
        "templates": list(s.prompts.templates),
        "class_prompts": None if main is None else {"kind": main.kind, "seed": main.seed, **main.record,
                                                    "n_prompts": sum(map(len, main.prompts))},
        "label_free": label_free,
        "precision": s.precision, "device": str(s.device), "world_size": dist.world_size(), "versions": versions(),
    }


def language_hash(phash: str, language: str, source: str) -> str:
    import hashlib

    return hashlib.sha256(f"{phash} language={language} source={source}".encode()).hexdigest()


def model_slug(ident) -> str:
    """Run-directory name for the weights: architecture, release tag or file name, and the sha256's first 8."""
    arch = "custom" if ident.architecture.startswith("custom") else ident.architecture
    arch = arch.removeprefix("open_clip ").removeprefix("transformers ")
    what = ident.release.split("/", 1)[1] if ident.release else Path(ident.label.split("@")[0]).stem
    return slug(f"{arch}_{what}_{ident.sha256[:8]}")


def run_dir_base(cfg: DictConfig, s: Setup, record: dict) -> Path:
    return Path(cfg.results_dir) / slug(record["dataset_label"]) / record["model_slug"] / slug(record["prompts_label"])


def slug(text: str) -> str:
    """A path segment: letters, digits, ".", "_", "-" kept; anything else becomes '-'."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "unnamed"


def make_run_dir(base: str | Path) -> Path:
    """A new directory `<base>/<timestamp>`; a second run in the same second gets `-1`, `-2`, ...

    `mkdir(exist_ok=False)` is the lock: two processes can never be handed the same directory.
    """
    from zeroshot.errors import UserError

    base = Path(base)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            path = base / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        from zeroshot.features.cache import unwritable_reason

        raise UserError(f"the results folder {base} cannot be written ({unwritable_reason(e)}): set results_dir=DIR "
                        "to a folder you can write") from None
    raise RuntimeError(f"Could not create a fresh run directory under {base}")


def versions() -> dict:
    from importlib.metadata import version

    import torch

    from zeroshot import __version__

    return {
        "zeroshot": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "numpy": np.__version__,
        "pillow": version("pillow"),
    }


def recorded_config(cfg: DictConfig, leave_out: tuple[str, ...] = ()) -> str:
    """config.yaml: the composed config as it ran, resolved, so a rerun from it runs the same. A checkpoint replaces
    model.name (the default config's ViT-B/32 would otherwise stand beside an RN50 file), so the name is emptied
    and the checkpoint is the weights' one name; metrics.json has their identity either way."""
    out = OmegaConf.to_container(cfg, resolve=True)
    for key in leave_out:
        out.pop(key, None)
    model = out.get("model")
    note = ""
    if isinstance(model, dict) and model.get("checkpoint") and model.get("name"):
        note = f"# model.name ({model['name']}) emptied: model.checkpoint replaced it\n"
        model["name"] = None
    return note + OmegaConf.to_yaml(OmegaConf.create(out))


def write_json(path: Path, obj: dict) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# ---------------------------------------------------------------- the run directory


@dataclass
class RunDirectory:
    path: Path  # the fresh directory, on every rank
    main: bool  # rank 0 (or no torchrun): the one that writes
    record: RunRecord | None = None  # set in the block; written as metrics.json when it ends


@contextmanager
def run_directory(base: str | Path | None, *, record: bool = True) -> Iterator[RunDirectory]:
    """A fresh run directory `<base>/<timestamp>` (make_run_dir: never an earlier run's)::

        with run_directory(base) as run:      # run.path exists now
            ...write files into run.path...
            run.record = RunRecord(...)       # written as run.path/metrics.json when the block ends: last

    On any exception in the block the directory is removed and the exception re-raised: a half-written run never
    looks like a result. Under torchrun rank 0 makes it (base may be None on other ranks) and every rank gets its
    path; only rank 0 (`run.main`) writes and removes. `record=False`: a folder of outputs without metrics.json
    (no record expected: `zeroshot prompts` writes its summary.json last itself); otherwise a block that ends
    without `run.record` is a bug.
    """
    main = dist.is_main()
    run = RunDirectory(Path(dist.broadcast_object(make_run_dir(base) if main else None)), main)
    try:
        yield run
        if main and record:
            if run.record is None:
                raise RuntimeError(f"{run.path}: the run ended without a record")
            write_json(run.path / "metrics.json", run.record.to_json())  # last: its presence marks the run complete
    except BaseException:
        if main:
            drawing.stop()  # first: no figure still queued may land in the directory once it is removed
            shutil.rmtree(run.path, ignore_errors=True)  # a half-written run must not look like a result
        raise
