"""Calibration in `eval`: the numbers that go into metrics.json, the reliability diagram, and where a fitted
temperature's images come from (`calibration:` in configs/eval.yaml).

`calibration.temperature=fit` never fits on the images it scores. With `calibration.split=NAME` the
temperature is fitted on another split of the dataset (e.g. train), read through the same pipeline and
feature cache as the scored one (as the linear probe reads its train split), and the calibration numbers cover
all scored images. With no split (image folders, CSVs, datasets that ship one split) a seeded `fraction` of the
scored images is held out to fit on, and every calibration number, before and after, covers the remaining
images only; accuracy metrics still cover all images, since no temperature changes an argmax.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
from omegaconf import DictConfig, open_dict

from zeroshot.classifier import logits as score
from zeroshot.classifier import probability_kind
from zeroshot.errors import ConfigError, DatasetError
from zeroshot.log import log
from zeroshot.metrics import calibration as cal

TEMPERATURE_CHOICES = (None, "fit")


def settings(cfg: DictConfig) -> dict:
    c = cfg.calibration
    return {"temperature": c.temperature, "split": c.split, "fraction": float(c.fraction), "seed": int(cfg.seed)}


def check_config(cfg: DictConfig) -> None:
    """Bad calibration settings fail before any model is loaded."""
    c = settings(cfg)
    if c["temperature"] not in TEMPERATURE_CHOICES:
        raise ConfigError(f"calibration.temperature={c['temperature']!r} is not one of null, fit")
    if c["temperature"] != "fit":
        return
    scored = cfg.dataset.split
    if c["split"] is None:
        cal.held_out_split(10, c["fraction"], 0)  # checks the fraction
        return
    splits = cfg.dataset.get("splits") or {}
    if c["split"] not in splits:
        raise DatasetError(f"calibration.split={c['split']} is not a split of dataset {cfg.dataset.name!r} "
                           f"(its splits: {', '.join(splits) or 'none'}); name one of them, or set calibration.split=null "
                           "to fit on a held-out fraction of the scored images")
    if c["split"] == scored:
        raise DatasetError(f"calibration.split={c['split']} is the split being scored: a temperature fitted on it would be "
                           "scored on its own images. Name another split, or set calibration.split=null to hold out a fraction")


def held_out_features(cfg: DictConfig, s):
    """Image features of the calibration split (every rank takes part; None on other ranks), or None."""
    c = settings(cfg)
    if c["temperature"] != "fit" or c["split"] is None:
        return None
    from zeroshot.data.readers import build_dataset
    from zeroshot.pipeline import image_features

    split_cfg = copy.deepcopy(cfg)
    with open_dict(split_cfg):
        split_cfg.dataset.split = c["split"]
    from zeroshot import distributed as dist

    # as in evaluate.prepare: under torchrun a download or an unpack happens once per node
    ds = dist.local_rank_zero_first(lambda: build_dataset(split_cfg.dataset, s.model.transform, cfg.skip_bad_images))
    if ds.fingerprint()["digest"] == s.dataset.fingerprint()["digest"]:
        raise DatasetError(f"calibration.split={c['split']} of {cfg.dataset.name!r} holds the same images as the scored split "
                           f"{cfg.dataset.split!r}; name a split with other images, or set calibration.split=null")
    feats = image_features(split_cfg, dataclasses.replace(s, dataset=ds), cfg.progress)
    return (feats, ds.fingerprint()["digest"]) if feats is not None else None


def calibrate(cfg: DictConfig, model, weights, logits, labels: np.ndarray, targets: dict, held=None) -> tuple[dict, list]:
    """metrics.json's calibration entries, and the reliability curves [(label, probs, labels)] to draw."""
    kind = probability_kind(model)
    record = {"probability": cal.PROBABILITY_NAMES[kind]}
    if "multilabel" in targets:  # several right classes per image: no single label to be calibrated against
        return {**record, "ece": None, "nll": None, "brier": None,
                "calibration": {"skipped": "multi-label images have no single true class"}}, []
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    c = settings(cfg)
    scored = np.arange(len(labels))
    info = {"n_bins": cal.N_BINS, "binning": "equal-width, top label", "temperature": None}
    if c["temperature"] == "fit":
        if held is not None:
            feats, digest = held
            fit_logits, fit_labels = score(model, feats.features, weights).numpy(), feats.labels.numpy()
            info["fit_on"] = {"split": c["split"], "dataset_fingerprint": digest, "n_images": int(len(fit_labels))}
        else:
            fit, scored = cal.held_out_split(len(labels), c["fraction"], c["seed"])
            fit_logits, fit_labels = logits[fit], labels[fit]
            info["fit_on"] = {"held_out_fraction": c["fraction"], "seed": c["seed"], "n_images": int(len(fit)),
                              "note": "calibration numbers cover the other images only"}
        info["temperature"] = cal.fit_temperature(fit_logits, fit_labels, kind)
    before = cal.calibration_metrics(logits[scored], labels[scored], kind)
    info["n_images_scored"] = int(len(scored))
    curves = [("model's own", cal.probabilities(logits[scored], kind), labels[scored])]
    out = {**record, **before}
    if info["temperature"] is not None:
        after = cal.calibration_metrics(logits[scored], labels[scored], kind, info["temperature"])
        info.update({f"{k}_before": v for k, v in before.items()} | {f"{k}_after": v for k, v in after.items()})
        out["ece_temperature_scaled"] = after["ece"]
        curves.append((f"T = {info['temperature']:.3g}", cal.probabilities(logits[scored], kind, info["temperature"]),
                       labels[scored]))
        log.info("calibration: T=%.4g fitted on %s images; ECE %.2f%% -> %.2f%%", info["temperature"],
                 info["fit_on"]["n_images"], 100 * before["ece"], 100 * after["ece"])
    out["calibration"] = info
    return out, curves
