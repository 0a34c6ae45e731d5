"""Calibration: ECE, NLL and Brier against brute-force loops (softmax and SigLIP's renormalized sigmoid), the
fitted temperature, and `eval` fitting it on images disjoint from the ones it scores."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroshot.metrics import calibration as cal
from zeroshot.errors import DatasetError
from zeroshot.settings import check_settings
from zeroshot.commands.evaluate import evaluate
from datagen import write_idx_split, write_imagefolder
from test_eval import run_cfg


def brute_probs(logits, kind):
    out = []
    for row in logits:
        if kind == "softmax":
            e = [math.exp(v) for v in row]
        else:
            e = [1 / (1 + math.exp(-v)) for v in row]
        out.append([v / sum(e) for v in e])
    return np.array(out)


def brute_ece(probs, labels, n_bins=15):
    """Guo et al.'s loop: bins (lo, hi] over top-label confidence."""
    total = 0.0
    n = len(labels)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(n) if lo < max(probs[i]) <= hi]
        if rows:
            acc = sum(int(np.argmax(probs[i]) == labels[i]) for i in rows) / len(rows)
            conf = sum(max(probs[i]) for i in rows) / len(rows)
            total += len(rows) / n * abs(acc - conf)
    return total


def brute_nll(probs, labels):
    return -sum(math.log(probs[i][labels[i]]) for i in range(len(labels))) / len(labels)


def brute_brier(probs, labels):
    return sum(sum((probs[i][c] - (c == labels[i])) ** 2 for c in range(len(probs[i]))) for i in range(len(labels))) / len(labels)


@pytest.mark.parametrize("kind,scale,bias", [("softmax", 100.0, 0.0), ("softmax", 5.0, 0.0), ("sigmoid", 10.0, -10.0)])
def test_metrics_equal_brute_force(kind, scale, bias):
    rng = np.random.default_rng(3)
    cos = rng.uniform(-0.3, 0.4, size=(300, 7))
    labels = rng.integers(0, 7, 300)
    cos[np.arange(300), labels] += rng.uniform(0, 0.2, 300)  # somewhat informative, so every bin is not empty
    logits = scale * cos + bias
    probs = cal.probabilities(logits, kind)
    expected = brute_probs(logits, kind)
    np.testing.assert_allclose(probs, expected, rtol=1e-10, atol=1e-15)
    m = cal.calibration_metrics(logits, labels, kind)
    assert m["ece"] == pytest.approx(brute_ece(expected, labels), abs=1e-12)
    assert m["nll"] == pytest.approx(brute_nll(expected, labels), rel=1e-10)
    assert m["brier"] == pytest.approx(brute_brier(expected, labels), rel=1e-10)
    assert 0 < m["ece"] < 1 and 0 < m["brier"] < 2


def test_sigmoid_renormalization_is_not_softmax():
    logits = np.array([[2.0, 0.0, -1.0]])
    s = cal.probabilities(logits, "sigmoid")
    assert s.sum() == pytest.approx(1.0) and not np.allclose(s, cal.probabilities(logits, "softmax"))
    big = cal.probabilities(np.array([[800.0, -800.0, 0.0]]), "sigmoid")  # no overflow at SigLIP-sized logits
    assert np.isfinite(big).all() and big[0, 0] == pytest.approx(2 / 3)


def test_bin_edges_are_right_closed():
    # confidences exactly on an edge (1/3 = 5/15) go to the bin below, as in (lo, hi]
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    b = cal.reliability_bins(probs, np.array([0, 0]))
    assert b["count"][4] == 1 and b["count"][14] == 1 and b["count"].sum() == 2


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_fitted_temperature_minimizes_nll(kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 5)) * 4
    labels = np.where(rng.random(400) < 0.5, logits.argmax(1), rng.integers(0, 5, 400))  # overconfident
    t = cal.fit_temperature(logits, labels, kind)
    grid = np.exp(np.linspace(-4, 4, 2001))
    losses = [cal.calibration_metrics(logits, labels, kind, g)["nll"] for g in grid]
    best = grid[int(np.argmin(losses))]
    assert t == pytest.approx(best, rel=5e-3)
    assert cal.calibration_metrics(logits, labels, kind, t)["nll"] <= min(losses) + 1e-9
    if kind == "softmax":
        assert t > 1  # overconfident logits get softened


def test_held_out_split_is_disjoint_and_seeded():
    fit, scored = cal.held_out_split(50, 0.2, 7)
    assert len(fit) == 10 and len(scored) == 40 and not set(fit) & set(scored) and set(fit) | set(scored) == set(range(50))
    assert (cal.held_out_split(50, 0.2, 7)[0] == fit).all()
    with pytest.raises(ValueError, match="calibration.fraction"):
        cal.held_out_split(50, 1.0, 0)


def test_eval_records_calibration(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "folder", ["cat", "dog", "bird"], per_class=4)
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'folder'}"))
    run = Path(m["run_dir"])
    saved = json.loads((run / "metrics.json").read_text())
    z = np.load(run / "logits.npz")
    expected = brute_probs(z["logits"], "softmax")
    assert saved["probability"] == "softmax" and saved["calibration"]["temperature"] is None
    assert saved["ece"] == pytest.approx(brute_ece(expected, z["labels"]), abs=1e-9)
    assert saved["nll"] == pytest.approx(brute_nll(expected, z["labels"]), rel=1e-9)
    assert saved["brier"] == pytest.approx(brute_brier(expected, z["labels"]), rel=1e-9)
    assert (run / "reliability_diagram.png").stat().st_size > 0


def test_temperature_fit_on_another_split(tmp_path, tiny_checkpoint, monkeypatch):
    """calibration.split=train: the temperature comes from the train images alone, and ECE covers all test images."""
    root = tmp_path / "mnist"
    write_idx_split(root, 30, "train", seed=1)
    write_idx_split(root, 20, "test", seed=2)
    seen = []
    real = cal.fit_temperature
    monkeypatch.setattr(cal, "fit_temperature", lambda lg, lb, k: seen.append((np.array(lg), np.array(lb))) or real(lg, lb, k))
    base = ["dataset=mnist", f"dataset.root={root}", "dataset.download=false"]
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, "calibration.temperature=fit", "calibration.split=train"))
    info = m["calibration"]
    assert info["fit_on"]["split"] == "train" and info["fit_on"]["n_images"] == 30 and info["n_images_scored"] == 20
    assert info["fit_on"]["dataset_fingerprint"] != m["dataset_fingerprint"]
    (fit_logits, fit_labels), = seen
    test = np.load(Path(m["run_dir"]) / "logits.npz")
    assert len(fit_labels) == 30 and fit_logits.shape[0] != test["logits"].shape[0]
    # the fitted temperature is the one that minimizes NLL on train, scored on test
    t = info["temperature"]
    assert t == pytest.approx(real(fit_logits, fit_labels, "softmax"))
    after = cal.calibration_metrics(test["logits"], test["labels"], "softmax", t)
    assert m["ece_temperature_scaled"] == pytest.approx(after["ece"]) and info["ece_after"] == pytest.approx(after["ece"])
    assert info["ece_before"] == pytest.approx(m["ece"])
    # checked with every setting, once, before any work (settings.py, from the CLI's one dispatch)
    with pytest.raises(DatasetError, match="is the split being scored"):
        check_settings(run_cfg(tmp_path, tiny_checkpoint, *base, "calibration.temperature=fit", "calibration.split=test"))
    with pytest.raises(DatasetError, match="not a split of dataset"):
        check_settings(run_cfg(tmp_path, tiny_checkpoint, *base, "calibration.temperature=fit", "calibration.split=val"))


def test_temperature_fit_on_held_out_fraction(tmp_path, tiny_checkpoint):
    """A dataset with one split: a seeded 25% is fitted on and calibration covers the other 75% only."""
    write_imagefolder(tmp_path / "folder", ["cat", "dog"], per_class=8)
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'folder'}",
                         "calibration.temperature=fit", "calibration.fraction=0.25"))
    info = m["calibration"]
    assert info["fit_on"]["n_images"] == 4 and info["n_images_scored"] == 12
    z = np.load(Path(m["run_dir"]) / "logits.npz")
    fit, scored = cal.held_out_split(16, 0.25, 0)
    assert info["temperature"] == pytest.approx(cal.fit_temperature(z["logits"][fit], z["labels"][fit], "softmax"))
    assert m["ece"] == pytest.approx(cal.calibration_metrics(z["logits"][scored], z["labels"][scored], "softmax")["ece"])


def test_siglip_style_model_records_sigmoid(tmp_path, tiny_vit):
    from zeroshot.pipeline import calibrate
    from omegaconf import OmegaConf

    class Sig(torch.nn.Module):
        logit_bias = torch.tensor(-10.0)

    logits = np.random.default_rng(1).normal(size=(40, 4)) * 5 - 10
    labels = np.arange(40) % 4
    out, curves = calibrate(OmegaConf.create({"seed": 0, "calibration": {"temperature": None, "split": None, "fraction": 0.2}}),
                             Sig(), None, logits, labels, targets={})
    assert out["probability"] == "sigmoid_renormalized"
    assert out["ece"] == pytest.approx(brute_ece(brute_probs(logits, "sigmoid"), labels), abs=1e-12)
    out, _ = calibrate(OmegaConf.create({}), Sig(), None, logits, labels, targets={"multilabel": np.zeros((40, 4))})
    assert out["ece"] is None and "multi-label" in out["calibration"]["skipped"]


def test_temperature_recovers_a_known_one_and_ece_falls():
    """Labels drawn from softmax(z), scored with logits 3z: the fitted T is about 3 and ECE drops on other images."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6000, 10)) * 2
    p = cal.probabilities(z, "softmax")
    labels = (p.cumsum(1) > rng.random((6000, 1))).argmax(1)  # one categorical draw per row
    fit, scored = np.arange(3000), np.arange(3000, 6000)
    t = cal.fit_temperature(3 * z[fit], labels[fit], "softmax")
    assert t == pytest.approx(3.0, rel=0.06)
    before = cal.calibration_metrics(3 * z[scored], labels[scored], "softmax")
    after = cal.calibration_metrics(3 * z[scored], labels[scored], "softmax", t)
    assert before["ece"] > 0.2 and after["ece"] < 0.03 and after["nll"] < before["nll"]
