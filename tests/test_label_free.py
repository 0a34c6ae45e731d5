"""Label-free prompt engineering: ZPE and CARPRT against independent transcriptions of their published algorithms,
CHiLS against a brute-force loop of its rule on CIFAR-100's hierarchy, no label read anywhere, the run identity,
the rows of `zeroshot prompts`, the bad inputs, and PromptLab."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, eval_config
from datagen import write_imagefolder
from zeroshot import label_free as lf
from zeroshot.errors import PromptError, UserError
from zeroshot.prompts.hierarchy import resolve_hierarchy

CLASSES = ["apple", "bus", "cat", "dog"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "itap of a {}.", "a {} in the snow."]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def problem(seed=0, n=40, t=5, c=7, d=16):
    """Normalized image features [N, D] and text features [T, C, D], as numpy (float64) and torch."""
    rng = np.random.default_rng(seed)
    image, text = unit(rng.normal(size=(n, d))), unit(rng.normal(size=(t, c, d)))
    return image, text


# --- independent transcriptions of the published algorithms, as plain loops over images, templates and classes


def zpe_published(image, text, scale, correction=None, normalize=True, temperature=1.0):
    """ZPE (Allingham et al., 2023): s_j = mean over images x of max_i [l_ij(x) - mean_{x' in correction} l_ij(x')],
    l_ij(x) = scale <x, z_ij>; weights softmax(s / temperature); prediction argmax_i sum_j w_j l_ij(x)."""
    correction = image if correction is None else correction
    n_t, n_c, _ = text.shape
    scores = []
    for j in range(n_t):
        mean_logit = [np.mean([scale * xc @ text[j, i] for xc in correction]) for i in range(n_c)]
        best = []
        for x in image:
            best.append(max(scale * x @ text[j, i] - (mean_logit[i] if normalize else 0.0) for i in range(n_c)))
        scores.append(np.mean(best))
    e = [math.exp(s / temperature) for s in scores]
    weights = np.array([v / sum(e) for v in e])
    preds = [int(np.argmax([sum(weights[j] * scale * x @ text[j, i] for j in range(n_t)) for i in range(n_c)])) for x in image]
    return weights, np.array(preds)


def carprt_published(image, text, scale, relevance="mean", temperature=1.0):
    """CARPRT (Dong et al., 2026): for each prompt p and image x, the class c* = argmax_c s_pc(x) takes the score
    s_pc*(x); a prompt's relevance to class c is the mean (or max) of the scores it gave the images it put in c,
    0 if none; weights softmax over prompts per class; prediction argmax_c sum_p w_pc s_pc(x)."""
    n_t, n_c, _ = text.shape
    rel = np.zeros((n_t, n_c))
    for p in range(n_t):
        got = {c: [] for c in range(n_c)}
        for x in image:
            s = [scale * x @ text[p, c] for c in range(n_c)]
            got[int(np.argmax(s))].append(max(s))
        for c in range(n_c):
            if got[c]:
                rel[p, c] = np.mean(got[c]) if relevance == "mean" else np.max(got[c])
    weights = np.zeros((n_t, n_c))
    for c in range(n_c):
        e = [math.exp(rel[p, c] / temperature) for p in range(n_t)]
        weights[:, c] = [v / sum(e) for v in e]
    preds = [int(np.argmax([sum(weights[p, c] * scale * x @ text[p, c] for p in range(n_t)) for c in range(n_c)]))
             for x in image]
    return weights, np.array(preds)


def chils_published(image, sub_feats, class_feats, parent, scale, reweight=True):
    """CHiLS (Novack et al., 2023): p(s|x) softmax over all subclasses, optionally times p(y(s)|x) (softmax over
    the classes); the prediction is the class of the best subclass."""
    preds = []
    for x in image:
        sub = np.array([scale * x @ f for f in sub_feats])
        sup = np.array([scale * x @ f for f in class_feats])
        p_sub = np.exp(sub - sub.max()) / np.exp(sub - sub.max()).sum()
        p_sup = np.exp(sup - sup.max()) / np.exp(sup - sup.max()).sum()
        best = max(range(len(sub_feats)), key=lambda s: p_sub[s] * (p_sup[parent[s]] if reweight else 1.0))
        preds.append(parent[best])
    return np.array(preds)


def project_predictions(image, text, weights, scale):
    feats = lf.weighted_features(torch.from_numpy(text).float(), weights)
    return (scale * torch.from_numpy(image).float() @ feats.t()).argmax(1).numpy()


@pytest.mark.parametrize("normalize", ["mean", "none"])
@pytest.mark.parametrize("own_correction", [True, False])
def test_zpe_equals_the_published_algorithm(normalize, own_correction):
    image, text = problem(0)
    correction = None if own_correction else unit(np.random.default_rng(9).normal(size=(25, image.shape[1])))
    scale, temperature = 20.0, 0.5
    want_w, want_pred = zpe_published(image, text, scale, correction, normalize == "mean", temperature)
    s = lf.LabelFreeSettings(weighting="zpe", weight_temperature=temperature, zpe_normalize=normalize)
    got = lf.weigh(s, torch.from_numpy(image).float(), torch.from_numpy(text).float(), scale,
                   correction=None if correction is None else torch.from_numpy(correction).float())
    np.testing.assert_allclose(got.weights.numpy(), want_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(project_predictions(image, text, got.weights, scale), want_pred)
    assert not np.allclose(want_w, 1 / len(want_w))  # the weighting is not a uniform one in disguise


@pytest.mark.parametrize("relevance", ["mean", "max"])
def test_carprt_equals_the_published_algorithm(relevance):
    image, text = problem(1, n=60)
    scale = 30.0
    want_w, want_pred = carprt_published(image, text, scale, relevance, temperature=2.0)
    s = lf.LabelFreeSettings(weighting="carprt", weight_temperature=2.0, carprt_relevance=relevance)
    got = lf.weigh(s, torch.from_numpy(image).float(), torch.from_numpy(text).float(), scale)
    np.testing.assert_allclose(got.weights.numpy(), want_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(project_predictions(image, text, got.weights, scale), want_pred)
    assert got.weights.shape == (5, 7) and not np.allclose(want_w, want_w[:, :1])  # class-aware: columns differ


def cifar100_coarse_names():
    doc = json.loads((REPO / "zeroshot/reference/cifar100_hierarchy.json").read_text())
    return [c.replace("_", " ") for c in doc["coarse_label_names"]], doc


def test_cifar100_hierarchy_is_the_dataset_s_label_order():
    """Its fine labels are exactly the project's 100 CIFAR-100 class names (its label order, alphabetical); its 20
    coarse labels are alphabetical (CIFAR-100's coarse label order), five fine labels each."""
    coarse, doc = cifar100_coarse_names()
    fine = json.loads((REPO / "prompts/cifar100.json").read_text())["classnames"]
    assert [f.replace("_", " ") for f in doc["fine_label_names"]] == fine
    assert doc["coarse_label_names"] == sorted(doc["coarse_label_names"]) and len(coarse) == 20
    h = resolve_hierarchy("cifar100", coarse)
    assert sorted(h.flat) == sorted(fine) and all(len(s) == 5 for s in h.subclasses)
    assert h.subclasses[coarse.index("trees")] == ["maple tree", "oak tree", "palm tree", "pine tree", "willow tree"]


@pytest.mark.parametrize("reweight", [True, False])
def test_chils_equals_a_brute_force_loop_on_cifar100(reweight):
    coarse, _ = cifar100_coarse_names()
    h = resolve_hierarchy("cifar100", coarse)
    rng = np.random.default_rng(3)
    image, sub_feats, class_feats = unit(rng.normal(size=(50, 16))), unit(rng.normal(size=(100, 16))), unit(rng.normal(size=(20, 16)))
    scale = 25.0
    want = chils_published(image, sub_feats, class_feats, h.parent, scale, reweight)
    img = torch.from_numpy(image).float()
    got = lf.chils_scores(scale * img @ torch.from_numpy(sub_feats).float().t(),
                          scale * img @ torch.from_numpy(class_feats).float().t(), torch.tensor(h.parent), reweight)
    np.testing.assert_array_equal(got.argmax(1).numpy(), want)
    other = lf.chils_scores(scale * img @ torch.from_numpy(sub_feats).float().t(),
                            scale * img @ torch.from_numpy(class_feats).float().t(), torch.tensor(h.parent), not reweight)
    assert (other.argmax(1).numpy() != want).any()  # reweighting changes predictions here: the test can tell them apart


# --- the bad inputs: one line each


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, UserError) and "\n" not in msg
    return msg


def test_bad_subclass_files(tmp_path):
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"apple": ["granny smith"], "bus": ["school bus"]}))
    with pytest.raises(PromptError) as e:
        resolve_hierarchy(str(missing), CLASSES)
    assert "no subclasses for 2 of the 4 classes" in one_line(e) and "'cat'" in one_line(e)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({c: [c] for c in [*CLASSES, "zebra"]}))
    with pytest.raises(PromptError) as e:
        resolve_hierarchy(str(unknown), CLASSES)
    assert "'zebra'" in one_line(e) and "lacks" in one_line(e)
    with pytest.raises(PromptError) as e:
        resolve_hierarchy(str(tmp_path / "nope.json"), CLASSES)
    assert "built-in" in one_line(e)


def test_weighting_needs_two_templates_and_images():
    image, text = problem(0, n=1, t=3)
    s = lf.LabelFreeSettings(weighting="zpe")
    with pytest.raises(PromptError) as e:
        lf.weigh(s, torch.from_numpy(image).float(), torch.from_numpy(text).float(), 10.0)
    assert "needs at least 2" in one_line(e) and "number 1" in one_line(e)
    image, text = problem(0, n=10, t=1)
    with pytest.raises(PromptError) as e:
        lf.weigh(lf.LabelFreeSettings(weighting="carprt"), torch.from_numpy(image).float(), torch.from_numpy(text).float(), 10.0)
    assert "the prompt set has 1" in one_line(e)


# --- through the pipeline: eval, zeroshot prompts, PromptLab


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("imgs") / "imgs", CLASSES, per_class=4)


def cfg_for(tmp_path, checkpoint, folder, *overrides, config="eval"):
    return eval_config(tmp_path, checkpoint, "dataset=imagefolder", f"dataset.root={folder}", "batch_size=8",
                       f"prompts.templates=[{','.join(repr(t) for t in TEMPLATES)}]", *overrides, config=config)


def test_eval_records_weights_and_identity_and_reads_no_label(tmp_path, tiny_checkpoint, folder):
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.label_free_run import label_free_classifier
    from zeroshot.pipeline import image_features, prepare

    plain = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder))
    zpe = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, "prompts.weighting=zpe", "figures=true"))
    carprt = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, "prompts.weighting=carprt"))
    labels = {plain["prompts_label"], zpe["prompts_label"], carprt["prompts_label"]}
    assert len(labels) == 3 and "+zpe#" in zpe["prompts_label"] and "+carprt#" in carprt["prompts_label"]
    assert zpe["label_free"]["method"] == "zpe" and zpe["label_free"]["normalize"] == "mean"
    w = pd.read_csv(f"{zpe['run_dir']}/prompt_weights.csv")
    assert list(w.template) == TEMPLATES and w.weight.sum() == pytest.approx(1, abs=1e-5)
    assert (tmp_path / zpe["run_dir"] / "prompt_weights.png").is_file()
    wc = pd.read_csv(f"{carprt['run_dir']}/prompt_weights.csv")
    assert len(wc) == len(TEMPLATES) * len(CLASSES)
    assert np.allclose(wc.groupby("class").weight.sum(), 1, atol=1e-5)
    # another temperature: other weights, another identity
    hot = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, "prompts.weighting=zpe", "prompts.weight_temperature=0.1"))
    assert hot["prompts_hash"] != zpe["prompts_hash"]

    # on the run's cached features, the published algorithms give the weights and predictions the runs recorded
    cfg = cfg_for(tmp_path, tiny_checkpoint, folder, "prompts.weighting=carprt")
    s = prepare(cfg)
    feats = image_features(cfg, s, False)
    assert feats.from_cache == len(feats.labels)
    image = unit(feats.features.double().numpy())
    text = lf.template_features(s.model, s.classnames, TEMPLATES).double().numpy()
    scale = float(s.model.logit_scale.exp())
    for run, (want_w, want_pred) in [(zpe, zpe_published(image, text, scale)), (carprt, carprt_published(image, text, scale))]:
        got = pd.read_csv(f"{run['run_dir']}/prompt_weights.csv").weight.to_numpy()
        np.testing.assert_allclose(got, want_w.ravel(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(pd.read_csv(f"{run['run_dir']}/predictions.csv").prediction.to_numpy(), want_pred)

    # the pipeline hands the method the labels with the features: shuffled labels, identical weights and logits
    first = label_free_classifier(cfg, s, feats)
    feats.labels = feats.labels[torch.randperm(len(feats.labels), generator=torch.Generator().manual_seed(0))]
    second = label_free_classifier(cfg, s, feats)
    assert first.table == second.table and torch.equal(first.logits, second.logits)


def test_eval_chils_with_a_subclass_file(tmp_path, tiny_checkpoint, folder):
    from zeroshot.commands.evaluate import evaluate

    subs = tmp_path / "subs.json"
    subs.write_text(json.dumps({"apple": ["granny smith", "fuji apple"], "bus": ["school bus"], "cat": ["tabby cat", "kitten"],
                                "dog": ["puppy", "beagle", "poodle"]}))
    chils = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.subclasses={subs}"))
    plain = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.subclasses={subs}", "prompts.chils_reweight=false"))
    assert "+chils#" in chils["prompts_label"] and chils["prompts_hash"] != plain["prompts_hash"]
    mapping = pd.read_csv(f"{chils['run_dir']}/prompt_weights.csv")
    assert list(mapping.subclass) == ["granny smith", "fuji apple", "school bus", "tabby cat", "kitten", "puppy", "beagle", "poodle"]


def test_eval_bad_settings_are_one_line_before_the_model_loads(tmp_path, folder, tiny_checkpoint, monkeypatch):
    from zeroshot import pipeline
    from zeroshot.pipeline import prepare

    def never(*args):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(pipeline, "load_for", never)
    ckpt = tiny_checkpoint
    for overrides, words in [
        (["prompts.weighting=zpe", "prompts.templates=['a photo of a {}.']"], "the prompt set has 1"),
        (["prompts.weighting=bogus"], "is not a choice: none, zpe, carprt"),
        (["prompts.weighting=zpe", "prompts.subclasses=cifar100"], "choose one"),
        (["prompts.subclasses=cifar100"], "no subclasses for 4 of the 4 classes"),
        (["prompts.weighting=zpe", "prompts.zpe_images=train"], "is not a split"),
    ]:
        with pytest.raises(UserError) as e:
            prepare(cfg_for(tmp_path, ckpt, folder, *overrides))
        assert words in one_line(e), overrides


def test_prompts_shows_label_free_rows_beside_the_labelled_ones(tmp_path, tiny_checkpoint, folder):
    from zeroshot.commands.prompts import run_prompts

    subs = tmp_path / "subs.json"
    subs.write_text(json.dumps({c: [f"small {c}", f"large {c}"] for c in CLASSES}))
    summary = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.subclasses={subs}", "bootstrap=50",
                                      config="prompts"))
    sets = pd.read_csv(f"{summary['run_dir']}/sets.csv")
    kinds = set(sets.kind)
    assert {"ensemble", "selected", "label_free", "label_free_heldout"} <= kinds
    free = sets[sets.kind == "label_free"]
    assert [n.split(" ")[0] for n in free.name] == ["ZPE", "CARPRT", "CHiLS", "CHiLS"]
    assert free.p_vs_baseline.between(0, 1).all() and (free.top1_ci_low <= free.top1).all()
    weights = pd.read_csv(f"{summary['run_dir']}/prompt_weights.csv")
    assert set(weights.method) == {"zpe", "carprt", "chils"}


def test_prompt_lab_scores_and_encodes_only_new_prompts(tmp_path, tiny_checkpoint, folder):
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.lab import PromptLab
    from zeroshot.metrics.stats import bootstrap_ci, paired_bootstrap_pvalue

    run = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder))
    lab = PromptLab.from_run(run["run_dir"], ["bootstrap=200"])
    pair = [TEMPLATES[0], "a sketch of a {}."]
    first = lab.score(pair)
    assert first.n_prompts == 8 and first.n_encoded == len(CLASSES)  # the run cached TEMPLATES[0] for every class
    again = lab.score(pair)
    assert again.n_encoded == 0 and again.top1 == first.top1
    # the numbers `zeroshot prompts` would give: same resamples, same CI and p-value
    correct = lab._correct(lab.class_features(pair)[0])
    base = lab._correct(lab.class_features("a photo of a {}.")[0])
    assert (first.ci_low, first.ci_high) == pytest.approx(bootstrap_ci(correct, 200, 0))
    assert first.p_vs_baseline == pytest.approx(paired_bootstrap_pvalue(correct, base, 200, 0))
    assert run["top1"] == pytest.approx(lab.score(TEMPLATES).top1)  # the run's own classifier, scored again
    described = lab.score({c: [f"a photo of a {c}, a thing."] for c in CLASSES})
    assert described.n_prompts == len(CLASSES) and described.n_encoded == len(CLASSES)
    assert lab.score(TEMPLATES, weighting="zpe").weighting == "zpe"
    with pytest.raises(PromptError):
        lab.score(["no placeholder"])
