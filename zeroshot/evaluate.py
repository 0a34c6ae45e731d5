"""`evaluate(cfg) -> dict`: one zero-shot evaluation, from a composed config to a results directory.

Everything that can be wrong with the inputs (names, class counts, templates, data) is checked before any
encoding starts, and the run directory is created fresh, so a failed run never leaves a report behind.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from . import distributed as dist
from .classifier import build_classifier
from .datasets import DatasetError, EvalDataset, build_dataset
from .features import Features, ImageFeatureCache, TextCache, extract_features
from .metrics import classification_metrics, topk_predictions
from .pretrained import default_cache_dir, load_model, resolve_precision
from .prompts import PromptError, PromptSet, load_prompt_set, read_classnames
from .results import make_run_dir, plot_confusion, plot_per_class, versions, write_json
from .transforms import image_transform, preprocess_spec


def resolve_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for but CUDA is not available here; use device=cpu or device=auto")
    return device


def cache_root(cfg: DictConfig) -> Path | None:
    if not cfg.get("cache", True):
        return None
    return Path(cfg.get("cache_dir") or default_cache_dir())


def resolve_prompts(cfg: DictConfig) -> PromptSet:
    p = cfg.prompts
    return load_prompt_set(
        name=p.get("name") or cfg.dataset.get("prompts", "simple"),
        file=p.get("file"),
        templates=list(p.templates) if p.get("templates") else None,
        template_set=p.get("template_set"),
    )


def resolve_classnames(cfg: DictConfig, pset: PromptSet, dataset: EvalDataset) -> list[str]:
    """Class names, by precedence: dataset.classnames file, the prompt set's own, the dataset's folder names.

    The count must equal the dataset's number of classes; this is checked here, before any encoding.
    """
    if cfg.dataset.get("classnames"):
        names, origin = read_classnames(cfg.dataset.classnames), f"class-names file {cfg.dataset.classnames}"
    elif pset.classnames:
        names, origin = pset.classnames, f"prompt set {pset.name!r}"
    elif dataset.classes:
        names, origin = [c.replace("_", " ") for c in dataset.classes], "the dataset's folder names"
    else:
        raise PromptError(
            f"Prompt set {pset.name!r} has no class names and dataset {cfg.dataset.name!r} does not name its classes; "
            "give them with dataset.classnames=FILE (one per line, in label order)"
        )
    expected = len(dataset.classes) if dataset.classes else cfg.dataset.get("num_classes")
    if expected is not None and len(names) != expected:
        raise PromptError(
            f"{origin} has {len(names)} class names but dataset {cfg.dataset.name!r} has {expected} classes. "
            "Use a prompt set or class-names file made for this dataset, in its label order."
        )
    return names


def feature_key(model, cfg: DictConfig, dataset: EvalDataset, precision: str) -> dict:
    """Everything that determines the image features: weights, pixels, and which images."""
    return {
        "checkpoint_sha256": model.checkpoint_sha256,
        "precision": precision,
        "preprocess": preprocess_spec(model.image_resolution),
        "dataset": cfg.dataset.name,
        "root": str(Path(cfg.dataset.get("root") or cfg.dataset.get("path") or "").expanduser().resolve()),
        "split": cfg.dataset.get("split", "test"),
        "n_images": len(dataset),
    }


@dataclass
class Setup:
    """What `prepare` checked and built: everything an evaluation or a prompt experiment needs."""

    model: torch.nn.Module
    dataset: EvalDataset
    prompts: PromptSet
    classnames: list[str]
    device: torch.device
    precision: str
    cache_root: Path | None


def prepare(cfg: DictConfig) -> Setup:
    torch.manual_seed(cfg.get("seed", 0))
    device = resolve_device(cfg.get("device", "auto"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    precision = resolve_precision(cfg.get("precision"), device)
    # Inputs are checked first, so a bad name, template or data path fails before any download or encoding.
    pset = resolve_prompts(cfg)
    dataset = build_dataset(cfg.dataset, None, cfg.get("skip_bad_images", False))
    classnames = resolve_classnames(cfg, pset, dataset)
    model = load_model(cfg.model.get("checkpoint") or cfg.model.name, device, precision, cfg.get("cache_dir"))
    dataset.transform = image_transform(model.image_resolution)
    return Setup(model, dataset, pset, classnames, device, precision, cache_root(cfg))


def resolve_workers(value) -> int:
    """`auto`: one worker per core but one, up to 8. Decoding CIFAR-sized JPEGs is light next to encode_image,
    so on a small CPU machine one worker keeps the model fed without taking cores from it."""
    if value in (None, "auto"):
        return max(1, min(8, (os.cpu_count() or 2) - 1))
    return int(value)


def image_features(cfg: DictConfig, s: Setup, progress: bool = True) -> Features | None:
    """Features of the whole dataset (on rank 0; None on other ranks), through the cache unless cache=false.

    A dataset none of whose images could be read is an error here, for every command that extracts features."""
    chunk_size = int(cfg.get("chunk_size", 2048))
    cache = None
    if s.cache_root is not None:
        cache = ImageFeatureCache(s.cache_root, feature_key(s.model, cfg, s.dataset, s.precision), chunk_size)
    feats = dist.extract_features_sharded(
        lambda positions: extract_features(
            s.model, s.dataset, cfg.batch_size, resolve_workers(cfg.num_workers), s.device, cache, positions, progress, chunk_size
        ),
        len(s.dataset),
        chunk_size,
    )
    if feats is not None and len(feats.labels) == 0:
        raise DatasetError(f"No readable images in dataset {cfg.dataset.name!r} ({feats.skipped} skipped as unreadable)")
    return feats


def text_cache(s: Setup) -> TextCache | None:
    return TextCache(s.cache_root, s.model.checkpoint_sha256, s.precision) if s.cache_root is not None else None


def run_dir_base(cfg: DictConfig, pset: PromptSet) -> Path:
    return Path(cfg.get("results_dir", "results")) / cfg.dataset.name / cfg.model.slug / pset.name


def evaluate(cfg: DictConfig) -> dict:
    """Run one zero-shot evaluation and write its results directory; returns the metrics dict."""
    start = time.perf_counter()
    s = prepare(cfg)
    progress = cfg.get("progress", True) and dist.is_main()

    weights = dist.build_classifier_sharded(
        lambda names: build_classifier(s.model, names, s.prompts.templates, cfg.text_batch_size, progress, text_cache(s)),
        s.classnames,
    ).to(s.device)  # [D, C]
    feats = image_features(cfg, s, progress)
    # Made only now, so a run that fails earlier leaves no directory; metrics.json, written last, marks it complete.
    run_dir = dist.broadcast_object(make_run_dir(run_dir_base(cfg, s.prompts)) if dist.is_main() else None)
    if not dist.is_main():
        return {"run_dir": str(run_dir)}

    image = F.normalize(feats.features, dim=-1)  # [N, D]
    scale = s.model.logit_scale.exp().float().cpu()
    logits = scale * image @ weights.float().cpu()  # [N, C]
    m = classification_metrics(logits, feats.labels)
    wall = time.perf_counter() - start

    metrics = {
        "top1": m["top1"],
        "top5": m["top5"],
        "mean_per_class_recall": m["mean_per_class_recall"],
        "n_images": int(len(feats.labels)),
        "n_classes": len(s.classnames),
        "n_templates": len(s.prompts.templates),
        "skipped_images": feats.skipped,
        "model": cfg.model.name,
        "model_slug": cfg.model.slug,
        "checkpoint": s.model.checkpoint_path,
        "checkpoint_sha256": s.model.checkpoint_sha256,
        "dataset": cfg.dataset.name,
        "split": cfg.dataset.get("split", "test"),
        "prompts": s.prompts.name,
        "precision": s.precision,
        "device": str(s.device),
        "world_size": dist.world_size(),
        "images_from_cache": feats.from_cache,
        "image_encode_seconds": feats.compute_s,
        "data_wait_seconds": feats.data_wait_s,
        "wall_seconds": wall,
        "timestamp": run_dir.name,
        "versions": versions(),
    }
    try:
        write_outputs(run_dir, cfg, s, feats, logits, m, metrics)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # a half-written run must not look like a result
        raise
    metrics["run_dir"] = str(run_dir)
    print(
        f"{cfg.dataset.name} | {cfg.model.name} | prompts {s.prompts.name} ({len(s.prompts.templates)} templates) | "
        f"top1 {100 * m['top1']:.2f}%  top5 {100 * m['top5']:.2f}%  mean per-class recall {100 * m['mean_per_class_recall']:.2f}% | "
        f"{len(feats.labels)} images in {wall:.1f}s -> {run_dir}"
    )
    return metrics


def write_outputs(run_dir: Path, cfg, s: Setup, feats: Features, logits: torch.Tensor, m: dict, metrics: dict) -> None:
    names = s.classnames
    pd.DataFrame(
        {
            "class_index": np.arange(len(names)),
            "class": names,
            "support": m["support"],
            "accuracy": m["per_class_accuracy"],
        }
    ).to_csv(run_dir / "per_class.csv", index=False)
    top5 = topk_predictions(logits, 5).numpy()
    idx = feats.indices.numpy()
    paths = s.dataset.paths
    pd.DataFrame(
        {
            "index": idx,
            "path": [paths[i] for i in idx] if paths else [""] * len(idx),
            "label": feats.labels.numpy(),
            "prediction": top5[:, 0],
            "label_name": [names[i] for i in feats.labels.numpy()],
            "prediction_name": [names[i] for i in top5[:, 0]],
            "top5": [" ".join(map(str, row)) for row in top5],
        }
    ).to_csv(run_dir / "predictions.csv", index=False)
    np.savez_compressed(run_dir / "logits.npz", logits=logits.numpy(), labels=feats.labels.numpy(), indices=idx)
    title = f"{cfg.dataset.name} | {cfg.model.name} | {s.prompts.name}"
    plot_confusion(m["confusion_matrix"], names, run_dir / "confusion_matrix.png", title)
    plot_per_class(m["per_class_accuracy"], names, run_dir / "per_class_accuracy.png", title)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run complete
