"""The CLIP paper's second evaluation: `python -m zeroshot linear-probe dataset=...`.

Logistic regression on frozen image features (from the feature cache), with the inverse regularization C
chosen by a sweep on a validation split held out from train, then refit on all of train and scored on test.
`probe.shots=k` fits on k images per class instead (several seeds; mean and spread reported).
"""
from __future__ import annotations

import copy
import dataclasses
import time
import warnings

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, open_dict
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from zeroshot import trackers
from zeroshot.data.readers import build_dataset
from zeroshot.errors import DatasetError
from zeroshot.metrics.classification import classification_metrics
from zeroshot.metrics.stats import held_out_split, share
from zeroshot.pipeline import image_features, prepare
from zeroshot.record import run_dir_base, run_directory, run_record
from zeroshot.runs import RunRecord


def _fit(x: np.ndarray, y: np.ndarray, c: float, cfg) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=int(cfg.probe.max_iter), random_state=int(cfg.seed)).fit(x, y)


def _scores(clf: LogisticRegression, x: np.ndarray, n_classes: int) -> torch.Tensor:
    """Decision scores laid out by class index, also when some class was absent from the training data."""
    scores = np.full((len(x), n_classes), -np.inf)
    raw = clf.decision_function(x)
    if raw.ndim == 1:  # binary: sklearn returns one column
        raw = np.stack([-raw, raw], axis=1)
    scores[:, clf.classes_] = raw
    return torch.from_numpy(scores)


def sweep_c(x: np.ndarray, y: np.ndarray, cfg) -> tuple[float, pd.DataFrame]:
    """Pick C on a seeded validation split of train: the C with the best validation accuracy (smallest on ties)."""
    n_val = max(1, share(len(y), cfg.probe.val_fraction))
    val, fit = held_out_split(len(y), n_val, int(cfg.seed), sort=False)  # rows in the permutation's order, as ever
    rows = []
    for c in sorted(float(v) for v in cfg.probe.c_values):
        acc = float((_fit(x[fit], y[fit], c, cfg).predict(x[val]) == y[val]).mean())
        rows.append({"C": c, "val_top1": acc})
    table = pd.DataFrame(rows)
    return float(table.loc[table.val_top1.idxmax(), "C"]), table


def train_split_config(cfg: DictConfig) -> DictConfig:
    splits = cfg.dataset.get("splits") or {}
    train = cfg.probe.train_split
    if train not in splits:
        raise DatasetError(
            f"Dataset {cfg.dataset.name!r} has no {train!r} split, which a linear probe needs. "
            f"Its splits: {', '.join(splits) or 'none (image folders and CSVs have one split)'}"
        )
    train_cfg = copy.deepcopy(cfg)
    with open_dict(train_cfg):
        train_cfg.dataset.split = train
    return train_cfg


def linear_probe(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    train_cfg = train_split_config(cfg)  # fails before any model is loaded
    trackers.check(cfg)
    s = prepare(cfg)
    train_ds = build_dataset(train_cfg.dataset, s.model.transform, cfg.skip_bad_images)
    test = image_features(cfg, s)
    train = image_features(train_cfg, dataclasses.replace(s, dataset=train_ds))
    x_tr, y_tr = train.features.numpy(), train.labels.numpy()
    shots = cfg.probe.get("shots")
    runs = fit_seeds(cfg, x_tr, y_tr, test, len(s.classnames))
    identity = {**run_record(cfg, s, len(test.labels), test.skipped), "prompts": "", "prompts_hash": "", "prompts_label": ""}
    results = {
        "top1": float(np.mean([r["top1"] for r in runs])),
        "top5": float(np.mean([r["top5"] for r in runs])),
        "mean_per_class_recall": float(np.mean([r["mean_per_class_recall"] for r in runs])),
        "top1_std": float(np.std([r["top1"] for r in runs])),
        "C": [r["C"] for r in runs] if shots else runs[0]["C"],
        "shots": shots, "seeds": [r["seed"] for r in runs], "n_train_per_seed": [r["n_train"] for r in runs],
        "top1_per_seed": [r["top1"] for r in runs],
    }
    # results/linear_probe/<dataset>/<model>/<timestamp>
    with run_directory(run_dir_base(cfg, s, identity).parent) as run:
        pd.concat([r["sweep"].assign(seed=r["seed"]) for r in runs]).to_csv(run.path / "probe_sweep.csv", index=False)
        run.record = RunRecord("linear_probe", results, identity, {
            "n_train": int(len(y_tr)), "n_images": int(len(test.labels)), "n_classes": len(s.classnames),
            "train_split": cfg.probe.train_split, "train_fingerprint": train_ds.fingerprint()["digest"],
            "wall_seconds": time.perf_counter() - start, "timestamp": run.path.name})
    metrics = {**run.record.to_json(), "run_dir": str(run.path)}
    label = f"{shots}-shot over {len(runs)} seeds" if shots else f"C={metrics['C']:g}"
    print(f"{identity['dataset_label']} | {identity['model']} | linear probe ({label}) | top1 {100 * metrics['top1']:.2f}% "
          f"top5 {100 * metrics['top5']:.2f}% | {len(y_tr)} train / {len(test.labels)} test images -> {run.path}")
    trackers.log_run(cfg, run.path)  # the run is complete: a tracker that fails now only warns
    return metrics


def fit_seeds(cfg: DictConfig, x_tr: np.ndarray, y_tr: np.ndarray, test, n_classes: int) -> list[dict]:
    """One fit per seed (k images per class with probe.shots=k, else all of train once): C swept, test scores."""
    shots = cfg.probe.get("shots")
    x_te, y_te = test.features.numpy(), test.labels.numpy()
    runs = []
    for seed in (cfg.probe.seeds if shots else [cfg.seed]):
        idx = np.arange(len(y_tr))
        if shots:
            rng = np.random.default_rng(int(seed))
            idx = np.concatenate([rng.permutation(np.flatnonzero(y_tr == k))[: int(shots)] for k in range(n_classes)])
        c, sweep = sweep_c(x_tr[idx], y_tr[idx], cfg)
        clf = _fit(x_tr[idx], y_tr[idx], c, cfg)
        m = classification_metrics(_scores(clf, x_te, n_classes), torch.from_numpy(y_te))
        runs.append({"seed": int(seed), "C": c, "n_train": int(len(idx)), "top1": m["top1"], "top5": m["top5"],
                     "mean_per_class_recall": m["mean_per_class_recall"], "sweep": sweep})
    return runs
