"""`zeroshot eval`: one zero-shot evaluation, from a composed config to a results directory (`evaluate(cfg) -> dict`),
and a suite's classification job.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from zeroshot import distributed as dist
from zeroshot import suite, trackers
from zeroshot.classifier import logits as score_logits
from zeroshot.features.cache import Features
from zeroshot.figures import drawing
from zeroshot.figures.run import plot_confusion, plot_per_class, plot_reliability
from zeroshot.files import write_columns
from zeroshot.label_free_run import label_free_classifier, write_label_free
from zeroshot.metrics.calibration import reliability_curve
from zeroshot.metrics.classification import (
    benchmark_metrics,
    classification_metrics,
    topk_predictions,
)
from zeroshot.pipeline import (
    Setup,
    calibrate,
    calibration_features,
    classifier_weights,
    image_features,
    prepare,
    prompt_count,
)
from zeroshot.record import recorded_config, run_dir_base, run_directory, run_record
from zeroshot.runs import RunRecord


def evaluate(cfg: DictConfig) -> dict:
    """Run one zero-shot evaluation and write its results directory; returns the metrics dict."""
    start = time.perf_counter()
    trackers.check(cfg)
    s = prepare(cfg)
    progress = cfg.progress and dist.is_main()

    weights = classifier_weights(cfg, s, progress)  # [D, C]
    feats = image_features(cfg, s, progress, loader_thumbnails(cfg, s))
    held = calibration_features(cfg, s)  # a temperature's own split, where one is asked for
    label_free = label_free_classifier(cfg, s, feats) if dist.is_main() else None  # ZPE, CARPRT, CHiLS: no label read
    if label_free is not None and label_free.classifier is not None:
        weights = label_free.classifier
    identity = run_record(cfg, s, len(feats.labels), feats.skipped) if dist.is_main() else None
    # Made only now, so a run that fails earlier leaves no directory; metrics.json, written last, marks it complete.
    with run_directory(run_dir_base(cfg, s, identity) if identity else None) as run:
        if not run.main:
            return {"run_dir": str(run.path)}
        sc = score(cfg, s, feats, weights, held, label_free)
        run.record = eval_record(cfg, s, feats, sc, identity, wall=time.perf_counter() - start, timestamp=run.path.name)
        if label_free is not None:  # its weights (or subclass mapping) and their figure, before the figures finish
            write_label_free(run.path, [label_free], s.prompts.templates, bool(cfg.figures),
                             f"{identity['dataset_label']} | {identity['model']}")
        write_outputs(run.path, cfg, s, feats, sc, run.record)
    metrics = {**run.record.to_json(), "run_dir": str(run.path)}
    print(summary_line(metrics, sc.m, prompt_count(s)))
    trackers.log_run(cfg, run.path)  # the run is complete: a tracker that fails now only warns
    return metrics


@dataclass
class Scores:
    """An evaluation's scores: logits [N, C], classification metrics, the benchmark's own, calibration."""

    logits: torch.Tensor
    m: dict  # classification_metrics (and the benchmark's top1 where it defines its own)
    extra: dict  # benchmark_metrics
    calib: dict  # calibration's metrics.json entries
    curves: list  # reliability curves to draw
    targets: dict  # the dataset's metadata / multi-hot targets, row-aligned


def score(cfg: DictConfig, s: Setup, feats: Features, weights: torch.Tensor, held, label_free) -> Scores:
    logits = score_logits(s.model, feats.features, weights) if label_free is None else label_free.logits  # [N, C]
    m = classification_metrics(logits, feats.labels)
    targets = {k: v[feats.indices.numpy()] for k, v in s.dataset.targets().items()}
    extra = benchmark_metrics(cfg.dataset, logits, feats.labels, targets)
    m.update({k: v for k, v in extra.items() if k == "top1"})
    calib, curves = calibrate(cfg, s.model, weights, logits, feats.labels.numpy(), targets=targets, held=held)
    return Scores(logits, m, extra, calib, list(curves), targets)


def eval_record(cfg: DictConfig, s: Setup, feats: Features, sc: Scores, identity: dict, *, wall: float,
                timestamp: str) -> RunRecord:
    m, metric = sc.m, cfg.dataset.metric
    results = {"top1": m["top1"], "top5": m["top5"], "mean_per_class_recall": m["mean_per_class_recall"], **sc.extra,
               **sc.calib, "metric": metric, "main_metric": {**m, **sc.extra}[metric]}
    details = {
        "n_images": int(len(feats.labels)), "n_classes": len(s.classnames), "n_templates": len(s.prompts.templates),
        "skipped_images": feats.skipped, "images_from_cache": feats.from_cache,
        "image_encode_seconds": feats.compute_s, "data_wait_seconds": feats.data_wait_s, **feats.step.metrics(),
        "wall_seconds": wall, "timestamp": timestamp,
    }
    return RunRecord("eval", results, identity, details)


def summary_line(metrics: dict, m: dict, n_prompts) -> str:
    metric = metrics["metric"]
    main_note = "" if metric in ("top1", "mean_per_class_recall") else f"  {metric} {100 * metrics['main_metric']:.2f}%"
    return (
        f"{metrics['dataset_label']} | {metrics['model']} ({metrics['architecture']}, sha256 {metrics['checkpoint_sha256'][:12]}) | "
        f"prompts {metrics['prompts_label']} ({n_prompts}) | "
        f"top1 {100 * m['top1']:.2f}%  top5 {100 * m['top5']:.2f}%  mean per-class recall {100 * m['mean_per_class_recall']:.2f}%"
        f"{main_note} | "
        f"{metrics['n_images']} images, {metrics['images_from_cache']} from cache, in {metrics['wall_seconds']:.1f}s -> "
        f"{metrics['run_dir']}"
    )


def write_outputs(run_dir: Path, cfg, s: Setup, feats: Features, sc: Scores, record: RunRecord) -> None:
    """per_class.csv, predictions.csv, logits.npz, the figures, the gallery and config.yaml (metrics.json is
    run_directory's, last)."""
    names, m, logits, targets = s.classnames, sc.m, sc.logits, sc.targets
    write_columns(run_dir / "per_class.csv", {"class_index": np.arange(len(names)), "class": names,
                                              "support": m["support"], "accuracy": m["per_class_accuracy"]})
    top5 = topk_predictions(logits, 5).numpy()
    idx, labels = feats.indices.numpy(), feats.labels.numpy()
    paths = s.dataset.paths
    write_columns(run_dir / "predictions.csv", {
        "index": idx,
        "path": [paths[i] for i in idx] if paths else [""] * len(idx),
        "label": labels,
        "prediction": top5[:, 0],
        "label_name": [names[i] for i in labels],
        "prediction_name": [names[i] for i in top5[:, 0]],
        "top5": [" ".join(map(str, row)) for row in top5],
    })
    # group metadata and multi-hot targets, row-aligned, so that `compare` can resample worst-group and mAP.
    # Not compressed: float32 logits shrink by a tenth under zlib, which takes 0.2 s per million (30x the write)
    np.savez(run_dir / "logits.npz", logits=logits.numpy(), labels=labels, indices=idx,
             **{k: v for k, v in (targets or {}).items() if k in ("metadata", "multilabel")})
    title = f"{record['dataset_label']} | {record['model']} | {record['prompts_label']}"
    if cfg.figures:  # drawn in the helper process where one runs (figures/drawing.py)
        if sc.curves:
            drawing.draw(plot_reliability, [reliability_curve(*c) for c in sc.curves], run_dir / "reliability_diagram.png",
                         f"{title} ({record['probability']})")
        drawing.draw(plot_confusion, np.asarray(m["confusion_matrix"]), list(names), run_dir / "confusion_matrix.png", title)
        drawing.draw(plot_per_class, np.asarray(m["per_class_accuracy"]), list(names), run_dir / "per_class_accuracy.png", title)
    if cfg.gallery.enabled and "multilabel" not in (targets or {}):  # one true class per image: one way to be wrong
        write_gallery(run_dir, s, feats, logits, record, cfg.gallery)
    (run_dir / "config.yaml").write_text(recorded_config(cfg))
    drawing.finish()


def loader_thumbnails(cfg: DictConfig, s: Setup):
    """The gallery's thumbnail maker for the loader, or None. The loader has every image decoded in hand, so a
    thumbnail costs it 0.6 CPU-ms where decoding the file again costs the gallery 2.5: worth it when the gallery
    may show most of the run's images, i.e. a run of at most `gallery.max_images` (the gallery shows every
    mistake there), and not for a larger one, whose gallery shows a small share of its images."""
    from functools import partial

    from zeroshot.gallery import thumbnail_jpeg

    if not (cfg.gallery.enabled and len(s.dataset) <= int(cfg.gallery.max_images)):
        return None
    return partial(thumbnail_jpeg, size=int(cfg.gallery.size))


def write_gallery(run_dir: Path, s: Setup, feats: Features, logits: torch.Tensor, metrics: dict, settings) -> None:
    """The error gallery, its thumbnails from the run's own images: those the loader made while it decoded them
    (`loader_thumbnails`), else files opened directly (at the thumbnail's decode scale), other sources through
    the dataset's own reader (CIFAR batches, shards)."""
    from zeroshot.data.base import DECODE_ERRORS, available_cores
    from zeroshot.gallery import RunView, open_recorded, write_run_gallery

    idx = feats.indices.numpy()
    kind = "sigmoid" if metrics.get("probability") == "sigmoid_renormalized" else "softmax"
    view = RunView(list(s.classnames), feats.labels.numpy(), logits.numpy(), idx,
                   [s.dataset.paths[i] for i in idx] if s.dataset.paths else None, kind)

    # a source that reads each image from its file through a loader function (image folders, CSVs): the gallery
    # opens the file itself, at the thumbnail's decode scale, in a thread per core; other readers once each, in turn
    files = view.paths is not None and callable(getattr(s.dataset.source, "loader", None))

    def image_of(row: int):
        made = feats.step.thumbnails.get(int(idx[row]))
        if made is not None:
            return made
        if files:  # None if it is gone or unreadable
            return open_recorded(view.paths[row], thumbnail=int(settings.size))
        try:
            return s.dataset.source[int(idx[row])][0]
        except DECODE_ERRORS:  # gone or unreadable since it was encoded: the gallery shows text
            return None

    title = f"{metrics['dataset_label']} | {metrics['model']} | {metrics['prompts_label']}"
    made_all = len(feats.step.thumbnails) == len(idx)
    write_run_gallery(run_dir, view, image_of, settings, title, threads=available_cores() if files or made_all else 1)


def evaluate_pair(cfg: DictConfig) -> dict:
    """A suite's classification job (`zeroshot suite-eval`): a failure is recorded for the report, not raised."""
    return suite.job(evaluate, cfg)
