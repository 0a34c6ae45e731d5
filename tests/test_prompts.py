"""Every prompt set: class names in the dataset's own label order, templates with exactly one {}."""
import json
import re
import warnings
from difflib import SequenceMatcher
from pathlib import Path

import pytest
import yaml

from zeroshot.prompts import PROMPTS_DIR, PromptError, available_prompt_sets, check_templates, load_prompt_set
from conftest import REPO, shared_path

LABEL_ORDERS = json.loads((Path(__file__).parent / "label_orders.json").read_text())
DATASETS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "configs" / "dataset").glob("*.yaml"))}
WITH_OWN_PROMPTS = {name: d for name, d in DATASETS.items() if d["prompts"] == name}


def norm(s: str) -> set[str]:
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s)  # AnnualCrop -> Annual Crop
    return set(re.sub(r"[^a-z0-9]+", " ", s.lower()).split())


def similarity(a: str, b: str) -> float:
    ta, tb = norm(a), norm(b)
    overlap = len(ta & tb) / max(1, min(len(ta), len(tb)))
    return overlap + SequenceMatcher(None, " ".join(sorted(ta)), " ".join(sorted(tb))).ratio() / 10


def aligned_fraction(names: list[str], raw: list[str]) -> float:
    """Share of positions whose class name resembles its own label id at least as much as any other id."""
    hits = 0
    for i, name in enumerate(names):
        scores = [similarity(name, r) for r in raw]
        hits += scores[i] >= max(scores) and scores[i] > 0.3
    return hits / len(names)


def test_registry_is_consistent():
    sets = set(available_prompt_sets())
    group = {p.stem for p in (REPO / "configs" / "prompts").glob("*.yaml")} - {"dataset", "imagenet_7"}
    assert sets == group, "every prompts/*.json needs configs/prompts/<name>.yaml and vice versa"
    for name, d in DATASETS.items():
        assert d["prompts"] in sets, f"dataset {name} names an unknown prompt set {d['prompts']}"


@pytest.mark.parametrize("name", sorted(WITH_OWN_PROMPTS))
def test_class_count_matches_dataset(name):
    pset = load_prompt_set(name)
    assert len(pset.classnames) == DATASETS[name]["num_classes"]
    dupes = sorted({c for c in pset.classnames if pset.classnames.count(c) > 1})
    # OpenAI's published ImageNet names keep two collisions (classes 657/744, 836/837); we ship them as published
    assert dupes == (["missile", "sunglasses"] if name == "imagenet" else []), dupes
    assert pset.templates and all(t.count("{}") == 1 for t in pset.templates)


@pytest.mark.parametrize("name", sorted(k for k in LABEL_ORDERS if not k.startswith("_")))
def test_class_order_matches_label_order(name):
    names, raw = load_prompt_set(name).classnames, LABEL_ORDERS[name]
    assert len(names) == len(raw)
    assert aligned_fraction(names, raw) >= 0.9, list(zip(names, raw))


def test_the_published_traps_are_caught():
    """The check above would fail on OpenAI's lists as published: cats-first Pets, 'background' in Caltech101."""
    oa_pets = sorted(LABEL_ORDERS["oxford_pets"], key=lambda c: c not in
                     {"Abyssinian", "Bengal", "Birman", "Bombay", "British Shorthair", "Egyptian Mau", "Maine Coon",
                      "Persian", "Ragdoll", "Russian Blue", "Siamese", "Sphynx"})
    assert aligned_fraction(oa_pets, LABEL_ORDERS["oxford_pets"]) < 0.9
    caltech = ["background"] + load_prompt_set("caltech101").classnames
    assert aligned_fraction(caltech[:101], LABEL_ORDERS["caltech101"]) < 0.9


def test_sorted_label_orders():
    """Food101, SUN397 and Country211 label ids are sorted folder names; their names must follow that order."""
    food = [n.replace(" ", "_") for n in load_prompt_set("food101").classnames]
    assert food == sorted(food)
    sun = load_prompt_set("sun397").classnames
    assert sun[:3] == ["abbey", "airplane cabin", "airport terminal"] and sun[-1] == "youth hostel"
    country = load_prompt_set("country211").classnames
    assert country[:3] == ["Andorra", "United Arab Emirates", "Afghanistan"]  # AD, AE, AF
    imagenet = load_prompt_set("imagenet")
    assert imagenet.classnames[0] == "tench" and imagenet.classnames[-1] == "toilet paper"
    assert len(imagenet.templates) == 80
    assert len(load_prompt_set("imagenet", template_set="simple_7").templates) == 7


@pytest.mark.parametrize("ours,theirs", [("flowers102", "flowers"), ("gtsrb", "gtsrb"), ("country211", "country211"),
                                         ("oxford_pets", "pets"), ("eurosat", "eurosat"), ("svhn", "svhn")])
def test_agrees_with_clip_benchmark_order(ours, theirs):
    """CLIP_benchmark lists these in torchvision's order; ours must agree position by position."""
    cb = json.loads(shared_path("reference", "clip_benchmark_en_classnames.json").read_text())[theirs]
    names = load_prompt_set(ours).classnames
    assert [n.lower() for n in names] == [n.lower() for n in cb]


def test_every_prompt_file_is_well_formed():
    for path in PROMPTS_DIR.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["name"] == path.stem and doc["source"]
        assert all(t.count("{}") == 1 for t in doc["templates"])
        assert len(set(doc["templates"])) == len(doc["templates"])


def test_template_checks():
    with pytest.raises(PromptError, match="no templates"):
        check_templates([], "x")
    with pytest.raises(PromptError, match="exactly one"):
        check_templates(["{} and {}"], "x")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert check_templates(["a {}", "b {}", "a {}"], "x") == ["a {}", "b {}"]
    assert "duplicate" in str(w[0].message)
    with pytest.raises(PromptError, match="Available: .*cifar10"):
        load_prompt_set("nope")
