"""Every prompt set: class names in the dataset's own label order, templates with exactly one {}."""
import json
import warnings
from pathlib import Path

import pytest

from zeroshot.prompts.sets import PROMPTS_DIR, available_prompt_sets, check_templates, load_prompt_set
from zeroshot.errors import PromptError
from conftest import REPO, shared_path, with_base

LABEL_ORDERS = json.loads((Path(__file__).parent / "label_orders.json").read_text())


ALL_DATASETS = {p.stem: with_base(p) for p in sorted((REPO / "configs" / "dataset").glob("[!_]*.yaml"))}
# classification datasets; retrieval sets (task: retrieval) have captions, not class prompts
DATASETS = {name: d for name, d in ALL_DATASETS.items() if d.get("task", "classification") == "classification"}
WITH_OWN_PROMPTS = {name: d for name, d in DATASETS.items() if d["prompts"] in (name, f"{name}_vtab")}


# Intentional differences from torchvision's class ids, element by element: (dataset, torchvision id) -> our name.
# Everything else must equal the id up to case and "_" vs " ". OpenAI's published names are kept where they
# are clearer prompts (the CLIP paper's choice), e.g. EuroSAT's "annual crop land" for AnnualCrop.
RENAMES = {
    "fashion_mnist": {"T-shirt/top": "t-shirt"},
    "mnist": {f"{d} - {w}": str(d) for d, w in enumerate("zero one two three four five six seven eight nine".split())},
    "svhn": {f"{d} {w}": w for d, w in enumerate("zero one two three four five six seven eight nine".split())},
    "eurosat": {"AnnualCrop": "annual crop land", "HerbaceousVegetation": "brushland or shrubland",
                "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
                "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
                "Residential": "residential buildings or homes or apartments", "SeaLake": "lake or sea"},
    "caltech101": {"Faces": "off-center face", "Faces_easy": "centered face", "Leopards": "leopard",
                   "Motorbikes": "motorbike", "airplanes": "airplane", "car_side": "side of a car",
                   "cougar_body": "body of a cougar cat", "cougar_face": "face of a cougar cat",
                   "crocodile_head": "head of a  crocodile", "flamingo_head": "head of a flamingo",
                   "snoopy": "snoopy (cartoon beagle)", "yin_yang": "yin and yang symbol"},
}
# CLIP_benchmark's lists (../shared) that ours must equal exactly, and the documented exceptions.
CLIP_BENCHMARK = {"mnist": "mnist", "svhn": "svhn", "oxford_pets": "pets", "flowers102": "flowers", "eurosat": "eurosat",
                  "gtsrb": "gtsrb", "country211": "country211", "imagenet": "imagenet1k", "caltech101": "caltech101",
                  "caltech101_vtab": "caltech101_vtab", "clevr_counts": "clevr_count_all",
                  "clevr_distance": "clevr_closest_object_distance", "kitti_distance": "kitti_closest_vehicle_distance",
                  "pcam": "pcam"}
CATS = {"Abyssinian", "Bengal", "Birman", "Bombay", "British Shorthair", "Egyptian Mau", "Maine Coon",
        "Persian", "Ragdoll", "Russian Blue", "Siamese", "Sphynx"}
CB_EXCEPTIONS = {
    "oxford_pets": ("OpenAI's names: dog breeds in lowercase, cat breeds capitalized",
                    lambda cb: [c if c in CATS else c.lower() for c in cb]),
    "caltech101": ("torchvision's Caltech101 has no 'background' class, CLIP_benchmark's list starts with it",
                   lambda cb: cb[1:]),
}


def key(name: str) -> str:
    return name.casefold().replace("_", " ")


def test_registry_is_consistent():
    sets = set(available_prompt_sets())
    group = {p.stem for p in (REPO / "configs" / "prompts").glob("*.yaml")} - {"dataset", "imagenet_7", "from_dataset"}
    assert sets == group, "every prompts/*.json needs configs/prompts/<name>.yaml and vice versa"
    for name, d in DATASETS.items():
        assert d["prompts"] in sets | {"from_dataset"}, f"dataset {name} names an unknown prompt set {d['prompts']}"
        if d["prompts"] == "from_dataset":  # its names ship with its webdataset: there is no list to check here
            assert d["kind"] == "wds", name


@pytest.mark.parametrize("name", sorted(WITH_OWN_PROMPTS))
def test_class_count_matches_dataset(name):
    pset = load_prompt_set(DATASETS[name]["prompts"])
    assert len(pset.classnames) == DATASETS[name]["num_classes"]
    dupes = sorted({c for c in pset.classnames if pset.classnames.count(c) > 1})
    # OpenAI's published ImageNet names keep two collisions (classes 657/744, 836/837); we ship them as published
    assert dupes == (["missile", "sunglasses"] if name == "imagenet" else []), dupes
    assert pset.templates and all(t.count("{}") == 1 for t in pset.templates)


@pytest.mark.parametrize("name", sorted(k for k in LABEL_ORDERS if not k.startswith("_")))
def test_class_order_equals_torchvision_ids(name):
    """Element by element: our i-th name is torchvision's i-th class id, or its documented rename."""
    ours, ids = load_prompt_set(name).classnames, LABEL_ORDERS[name]
    renames = RENAMES.get(name, {})
    expected = [renames.get(raw, raw) for raw in ids]
    assert len(ours) == len(ids)
    mismatches = [(i, o, e) for i, (o, e) in enumerate(zip(ours, expected)) if key(o) != key(e)]
    assert mismatches == []
    assert set(renames) <= set(ids), "a rename names a class id the dataset does not have"


def test_exact_check_catches_swaps_and_published_traps():
    """The check above fails on two swapped CIFAR-100 classes, on OpenAI's cats-first Pets list, and on
    Caltech101 with 'background' kept (the similarity test it replaced passed ten CIFAR-100 swaps)."""
    names = load_prompt_set("cifar100").classnames
    swapped = list(names)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert [key(n) for n in swapped] != [key(n) for n in LABEL_ORDERS["cifar100"]]
    pets = sorted(LABEL_ORDERS["oxford_pets"], key=lambda c: c not in CATS)
    assert [key(n) for n in pets] != [key(n) for n in LABEL_ORDERS["oxford_pets"]]


@pytest.mark.parametrize("ours", sorted(CLIP_BENCHMARK))
def test_agrees_with_clip_benchmark_lists(ours):
    """CLIP_benchmark's published lists, in each dataset's label order: ours must be equal, element by element,
    except for the documented exceptions, each of which must really be needed."""
    cb = json.loads(shared_path("reference", "clip_benchmark_en_classnames.json").read_text())[CLIP_BENCHMARK[ours]]
    names = load_prompt_set(ours).classnames
    if ours in CB_EXCEPTIONS:
        _, transform = CB_EXCEPTIONS[ours]
        assert names != cb and names == transform(cb)
    else:
        assert names == cb


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
