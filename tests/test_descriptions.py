"""Class-specific prompts: published files mapped onto every dataset's label order, both aggregations against
brute force, WaffleCLIP's random descriptors, URL sources, identity, and the experiments on tiny features."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import zeroshot
from zeroshot.prompts import descriptions as D
from zeroshot.prompts import waffle
from zeroshot.classifier import AGGREGATES, aggregate_features, build_class_classifier, encode_class_prompts
from zeroshot.classifier import build_classifier, logits as score
from zeroshot.experiments.descriptions import greedy_text_selection, leave_one_text_out, run_description_experiments, write_description_outputs
from zeroshot.errors import PromptError, UserError
from conftest import REPO, make_cfg, shared_path
from localserver import server  # noqa: F401  (the fixture)

PROMPTS = REPO / "prompts"


def classnames(dataset: str) -> list[str]:
    return json.loads((PROMPTS / f"{dataset}.json").read_text())["classnames"]


def raw(folder: str, name: str) -> dict:
    return json.loads(shared_path("reference", "descriptions", folder, name).read_text())


# ---------------------------------------------------------------- every shared file, every dataset zeroshot has

# (folder, file, zeroshot prompt set, what the mapping must report). The exceptions are facts about the files:
# - cupl cal: "background" is a Caltech-101 class in VTAB's 102 (caltech101_vtab) but not in zeroshot's 101;
# - cupl cars: "Ram CV Cargo Van Minivan 2012" for "Ram C/V ..."; cupl sun: "apse (indoor)" for "apse indoor";
# - dclip flowers102: Oxford's names "ball moss", "lotus lotus", "pink-yellow dahlia" (rename table), "globe-flower";
# - dclip imagenet: "eft" and "maillot" (renames), and the two "missile" and two "sunglasses" classes, which a
#   JSON object keyed by OpenAI's names cannot address: they fall back to the templates;
# - dclip cars, fgvcaircraft, food101: classes with an empty list fall back to their name.
MAPPED = [
    ("cupl", "airplane_prompts_full.json", "fgvc_aircraft", {}),
    ("cupl", "cal_prompts_full.json", "caltech101_vtab", {"respelled": 1}),
    ("cupl", "cal_prompts_full.json", "caltech101", {"ignored": ["background"], "respelled": 1}),
    ("cupl", "cars_prompts_full.json", "stanford_cars", {"respelled": 1}),
    ("cupl", "cifar10_prompts_full.json", "cifar10", {}),
    ("cupl", "cifar100_prompts_full.json", "cifar100", {}),
    ("cupl", "flower_prompts_full.json", "flowers102", {}),
    ("cupl", "food_prompts_full.json", "food101", {}),
    ("cupl", "pets_prompts_full.json", "oxford_pets", {}),
    ("cupl", "res45_prompts_full.json", "resisc45", {}),
    ("cupl", "sun_prompts_full.json", "sun397", {"respelled": 126}),
    ("cupl", "texture_prompts_full.json", "dtd", {}),
    ("dclip", "descriptors_cars.json", "stanford_cars", {}),
    ("dclip", "descriptors_dtd.json", "dtd", {}),
    ("dclip", "descriptors_eurosat.json", "eurosat", {}),
    ("dclip", "descriptors_flowers102.json", "flowers102", {"renamed": 3, "respelled": 1}),
    ("dclip", "descriptors_food101.json", "food101", {}),
    ("dclip", "descriptors_imagenet.json", "imagenet", {"renamed": 2, "unaddressable": [657, 744, 836, 837]}),
    ("dclip", "descriptors_pets.json", "oxford_pets", {}),
]


@pytest.mark.parametrize("folder,name,dataset,expect", MAPPED, ids=[f"{m[0]}-{m[1].split('.')[0]}-{m[2]}" for m in MAPPED])
def test_shared_file_maps_onto_label_order(folder, name, dataset, expect):
    path = shared_path("reference", "descriptions", folder, name)
    data, names = raw(folder, name), classnames(dataset)
    desc = D.read_descriptions(path)
    assert desc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and list(desc.texts) == list(data)
    if expect.get("ignored"):
        with pytest.raises(PromptError, match="background.*descriptions_extra_keys=ignore"):
            D.map_descriptions(desc.texts, names, name)
    m = D.map_descriptions(desc.texts, names, name, extra_keys="ignore" if expect.get("ignored") else "error")
    assert m.ignored_keys == expect.get("ignored", [])
    assert m.unaddressable == expect.get("unaddressable", [])
    assert m.matched_by["renamed"] == expect.get("renamed", 0)
    assert len(m.respelled) == expect.get("renamed", 0) + expect.get("respelled", 0)
    used = set(m.ignored_keys) | set(m.dropped_keys)
    # every key used once, every addressable class given exactly the texts of the key that names it
    assert sum(m.matched_by.values()) + len(used) == len(data)
    by_class = {cls: key for key, cls in m.respelled}
    for i, c in enumerate(names):
        if i in m.unaddressable:
            assert m.texts[i] is None
            continue
        key = by_class.get(c, c)
        assert m.texts[i] == [t.strip() for t in data[key] if t.strip()], (i, c, key)
    assert m.empty == [i for i, t in enumerate(m.texts) if t == []]
    assert len(m.empty) == sum(1 for k, v in data.items() if k not in used and not any(t.strip() for t in v))
    for key, cls in m.respelled:  # respellings really are the same name, or a documented rename
        assert D.normalize_name(key) == D.normalize_name(cls) or D.renames()[D.normalize_name(key)] == cls


@pytest.mark.parametrize("name,dataset", [("descriptors_imagenet.json", "imagenet"), ("descriptors_flowers102.json", "flowers102")])
def test_renames_agree_with_the_files_own_label_order(name, dataset):
    """These two files list their keys in label order: every rename lands on the class at the key's position."""
    data, names = raw("dclip", name), classnames(dataset)
    m = D.map_descriptions(data, names, name)
    keys = list(data)
    for key, cls in m.respelled:
        assert names[keys.index(key)] == cls
    for i in m.unaddressable:  # and these are the keys the name list could not place
        assert keys[i] in m.dropped_keys


def test_duplicate_classes_can_be_keyed_by_index():
    data, names = raw("dclip", "descriptors_imagenet.json"), classnames("imagenet")
    keys = list(data)
    fixed = {k: v for k, v in data.items() if k not in ("missile", "projectile", "sunglass", "sunglasses")}
    fixed.update({f"#{i}": data[keys[i]] for i in (657, 744, 836, 837)})
    m = D.map_descriptions(fixed, names, "fixed")
    assert m.unaddressable == [] and m.matched_by["index"] == 4 and m.texts[744] == data["projectile"]


def test_dclip_aircraft_is_family_level_and_does_not_map():
    """DCLIP's aircraft descriptors are for FGVC Aircraft's 70 families; zeroshot's fgvc_aircraft has the 100 variants."""
    data = raw("dclip", "descriptors_fgvcaircraft.json")
    assert len(data) == 70
    with pytest.raises(PromptError) as e:
        D.map_descriptions(data, classnames("fgvc_aircraft"), "descriptors_fgvcaircraft.json")
    msg = str(e.value)
    assert "\n" not in msg and "19 key(s) match no class" in msg and "49 class(es) have no key" in msg and "'Boeing 737'" in msg


def test_files_without_a_zeroshot_dataset():
    """DCLIP's cub and places365 have no zeroshot dataset (no prompt set): nothing to map them onto yet."""
    for name in ("descriptors_cub.json", "descriptors_places365.json"):
        shared_path("reference", "descriptions", "dclip", name)
    sets = {p.stem for p in PROMPTS.glob("*.json")}
    assert not any(s.startswith(("cub", "places")) for s in sets), "a new dataset: add its mapping to MAPPED"


# ---------------------------------------------------------------- mapping rules and errors

NAMES = ["aquarium fish", "maple tree", "missile", "lion", "missile"]


def test_mapping_rules_and_one_line_errors():
    texts = {"Aquarium_Fish": ["a"], "maple tree": ["b", "c"], "lion": [], "missile": ["x"], "#4": ["y"]}
    m = D.map_descriptions(texts, NAMES, "f.json")
    assert m.texts == [["a"], ["b", "c"], None, [], ["y"]]
    assert m.matched_by == {"exact": 2, "normalised": 1, "renamed": 0, "index": 1}
    assert m.unaddressable == [2] and m.dropped_keys == ["missile"] and m.empty == [3]
    cases = {
        "match no class: 'lioness' \\(closest: 'lion'\\)": {"aquarium fish": [], "maple tree": [], "lioness": []},
        "have no key: 'lion'": {"aquarium fish": [], "maple tree": []},
        "several keys: 'lion' by \\['lion', 'LION'\\]": {"aquarium fish": [], "maple tree": [], "lion": [], "LION": []},
        "past the last label 4: #9": {"aquarium fish": [], "maple tree": [], "lion": [], "#9": []},
    }
    for pattern, bad in cases.items():
        with pytest.raises(PromptError, match=pattern) as e:
            D.map_descriptions(bad, NAMES, "f.json")
        assert "\n" not in str(e.value) and "f.json" in str(e.value)
    with pytest.raises(PromptError, match="descriptions_extra_keys"):
        D.map_descriptions(texts, NAMES, extra_keys="drop")


def test_rename_applies_only_when_the_name_is_not_a_class():
    assert D.map_descriptions({"eft": ["e"], "newt": ["n"]}, ["eft", "newt"]).texts == [["e"], ["n"]]
    assert D.map_descriptions({"eft": ["e"]}, ["newt"]).respelled == [("eft", "newt")]


@pytest.mark.parametrize("content,match", [
    (b"{\"a\": [\"x\"],}", "not valid JSON: .* line 1"),
    (b"[\"a photo of a {}.\"]", "holds list"),
    (b"{\"a\": \"x\"}", "value of 'a' is not a list of strings"),
    (b"{\"a\": [1]}", "value of 'a' is not a list of strings"),
    (b"{}", "holds nothing"),
    ("{\"caf\u00e9\": [\"x\"]}".encode("latin-1"), "not UTF-8 text: byte 0xe9 on line 1 \\(offset 5\\)"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        D.read_descriptions(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PromptError, match="does not exist"):
        D.read_descriptions(tmp_path / "nope.json")


# ---------------------------------------------------------------- composing

def test_compose_dclip_verbs_fallbacks_and_combine():
    p = D.DCLIP_PATTERN
    assert D.compose(p, "owl", "a round face") == "owl, which is a round face."
    assert D.compose(p, "owl", "has big eyes") == "owl, which has big eyes."
    assert D.compose(p, "owl", "often nocturnal") == "owl, which often nocturnal."
    assert D.compose(p, "owl", "used for luck") == "owl, which is used for luck."
    assert D.compose(p, "owl", "feathers") == "owl, which has feathers."
    assert D.compose("a photo of a {c}: {d}", "owl", "feathers") == "a photo of a owl: feathers"
    assert D.name_prompt(D.PAPER_CODE_PATTERN, "owl") == "A photo of a owl."
    assert D.name_prompt("{d} of the {c}!", "owl") == "{c}!".replace("{c}", "owl")
    with pytest.raises(PromptError, match="once each"):
        D.class_prompts([["x"]], ["owl"], [], "descriptors", "{c} has")
    texts = [["feathers"], [], None]
    names, templates = ["owl", "cat", "missile"], ["a photo of a {}.", "art of a {}."]
    assert D.class_prompts(texts, names, templates, "descriptors") == [
        ["owl, which has feathers."], ["cat."], ["a photo of a missile.", "art of a missile."]]
    added = D.class_prompts(texts, names, templates, "sentences", combine="add")
    assert added[0] == ["feathers", "a photo of a owl.", "art of a owl."] and added[1][0] == "cat"
    with pytest.raises(PromptError, match="sentences, descriptors"):
        D.class_prompts(texts, names, templates, "words")


# ---------------------------------------------------------------- aggregations against brute force

def brute_force_logits(model, image, class_prompts, aggregate):
    """One prompt at a time through encode_text, and the score of each class by its definition."""
    x = F.normalize(image.float(), dim=-1)
    scale, bias = model.logit_scale.exp().float().item(), getattr(model, "logit_bias", None)
    out = torch.zeros(len(x), len(class_prompts))
    with torch.no_grad():
        for c, prompts in enumerate(class_prompts):
            t = torch.cat([F.normalize(model.encode_text(zeroshot.tokenize([p])).float(), dim=-1) for p in prompts])
            if aggregate == "score_mean":  # mean over the class's prompts of the full score, bias included
                out[:, c] = torch.stack([scale * (x @ t[j]) + (0 if bias is None else bias.item()) for j in range(len(t))]).mean(0)
            else:
                out[:, c] = scale * (x @ F.normalize(t.mean(0), dim=-1)) + (0 if bias is None else bias.item())
    return out


class WithBias:
    """The tiny model with a SigLIP-style logit_bias, for the bias path of score_mean."""

    def __init__(self, model):
        self.model, self.logit_bias = model, torch.tensor(-3.5)

    def __getattr__(self, name):
        return getattr(self.model, name)


CLASS_PROMPTS = [["a photo of a cat.", "a fluffy cat", "a cat on a mat, which has whiskers."],
                 ["a dog"], ["a red bus.", "a bus, which is a vehicle.", "a bus", "a long yellow school bus", "a dog"]]


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("bias", [False, True], ids=["clip", "with-bias"])
def test_aggregations_equal_brute_force(tiny_vit, aggregate, bias):
    model = WithBias(tiny_vit) if bias else tiny_vit
    torch.manual_seed(0)
    image = torch.randn(9, tiny_vit.embed_dim)
    w = build_class_classifier(model, CLASS_PROMPTS, aggregate, batch_size=2)
    assert w.shape == (tiny_vit.embed_dim, 3)
    torch.testing.assert_close(score(model, image, w), brute_force_logits(model, image, CLASS_PROMPTS, aggregate),
                               rtol=1e-5, atol=1e-5)


def test_template_prompts_give_build_classifier_and_encode_once(tiny_vit):
    names, templates = ["cat", "dog", "bus"], ["a photo of a {}.", "a {} in the wild", "art of a {}"]
    w = build_class_classifier(tiny_vit, [[t.replace("{}", c) for t in templates] for c in names])
    torch.testing.assert_close(w, build_classifier(tiny_vit, names, templates), rtol=1e-5, atol=1e-6)

    class Cache:
        def __init__(self):
            self.table, self.puts = {}, []

        def get(self, prompts):
            return {p: self.table[p] for p in prompts if p in self.table}

        def put(self, new):
            self.puts.append(list(new))
            self.table.update(new)

    cache = Cache()
    texts = encode_class_prompts(tiny_vit, CLASS_PROMPTS, text_cache=cache)
    assert cache.puts == [list(dict.fromkeys(p for ps in CLASS_PROMPTS for p in ps))]  # "a dog" once, for two classes
    assert texts.counts().tolist() == [3, 1, 5] and len(texts.prompts) == 9
    again = encode_class_prompts(tiny_vit, CLASS_PROMPTS, text_cache=cache)
    assert len(cache.puts) == 1 and torch.equal(again.features, texts.features)
    with pytest.raises(PromptError, match="aggregate='max' is not a choice: embedding_mean, score_mean"):
        build_class_classifier(tiny_vit, CLASS_PROMPTS, "max")


# ---------------------------------------------------------------- WaffleCLIP

def test_word_list_ships_and_descriptors_follow_the_construction():
    words = waffle.words()
    assert len(words) > 20_000 and all(w.isascii() and w.isalpha() and 4 <= len(w) <= 15 for w in words)
    names = ["red fox", "snow leopard cub", "ox"]
    shape = waffle.shape_of_names(names)
    # mean words 2 -> 2; mean word length (2.5 + 4.33 + 2) / 3 -> 3; spaces mean 1 -> 2 groups; longest words 3, 7, 2
    assert shape == {"n_words": 2, "word_length": 3, "groups": 2, "group_length": 3}
    out = waffle.random_descriptors(names, 4, seed=3, descriptors=["xy, z.", "q"])
    assert len(out) == 8
    for word, chars in zip(out[::2], out[1::2]):
        parts = word.split(" ")
        assert len(parts) == 2 and all(any(w.startswith(p) for w in words) and len(p) <= 3 for p in parts)
        groups = chars.split(", ")
        assert len(groups) == 2 and all(len(g) == 3 and set(g) <= set("xyzq") for g in groups)


def test_waffle_deterministic_per_seed_and_different_across_seeds(tiny_vit):
    names = ["cat", "dog", "school bus"]
    a, b = waffle.waffle_texts(names, 5, seed=0), waffle.waffle_texts(names, 5, seed=0)
    c = waffle.waffle_texts(names, 5, seed=1)
    assert a == b and a != c and all(t == a[0] for t in a) and len(a[0]) == 10
    build = lambda texts: build_class_classifier(tiny_vit, D.class_prompts(texts, names, [], "descriptors"), "score_mean")  # noqa: E731
    assert torch.equal(build(a), build(b)) and not torch.allclose(build(a), build(c))
    own = [["whiskers"], None, ["wheels", "yellow paint"]]
    mixed = waffle.waffle_texts(names, 2, seed=0, own=own, with_own=True)
    assert mixed[1] is None and mixed[0][:1] == ["whiskers"] and mixed[2][2:] == mixed[0][1:]


def test_controls():
    own = [["a", "b"], None, ["c"], ["d", "e", "f"]]
    swapped = waffle.control_texts(own, "swapped", 0)
    assert swapped[1] is None and sorted(map(tuple, (swapped[i] for i in (0, 2, 3)))) == sorted([("a", "b"), ("c",), ("d", "e", "f")])
    shuffled = waffle.control_texts(own, "shuffled", 0)
    assert [None if s is None else len(s) for s in shuffled] == [2, None, 1, 3]
    assert sorted(d for s in shuffled if s for d in s) == list("abcdef")
    assert waffle.control_texts(own, "shuffled", 0) == shuffled and any(
        waffle.control_texts(own, "shuffled", s) != shuffled for s in range(1, 5))
    with pytest.raises(PromptError, match="shuffled, swapped"):
        waffle.control_texts(own, "scrambled", 0)


# ---------------------------------------------------------------- identity

def test_hash_changes_with_each_option():
    base = dict(classnames=["cat", "dog"], templates=["a {}."], prompts=[["x"], ["y"]], mode="descriptors",
                pattern=D.DCLIP_PATTERN, combine="replace", aggregate="score_mean", extra={"waffle": 15, "seed": 0})
    h = D.class_prompts_hash(**base)
    changes = {"classnames": ["cat", "wolf"], "templates": ["art of a {}."], "prompts": [["x"], ["y", "z"]],
               "mode": "sentences", "pattern": "A photo of a {c}, which (is/has/etc) {d}.", "combine": "add",
               "aggregate": "embedding_mean", "extra": {"waffle": 15, "seed": 1}}
    for key, value in changes.items():
        assert D.class_prompts_hash(**{**base, key: value}) != h, key
    assert D.class_prompts_hash(**{**base, "extra": {"controls": ["swapped"], "waffle": 15, "seed": 0}}) != h
    assert D.prompts_label("cifar100_prompts_full", h) == f"cifar100_prompts_full#{h[:8]}"


# ---------------------------------------------------------------- URLs and offline


def test_url_source_cached_and_offline(server, tmp_path):
    base, routes = server
    body = json.dumps({"cat": ["a cat"], "dog": ["a dog", "a puppy"]}).encode()
    routes["/cupl/pets.json"] = (200, body, None)
    url = f"{base}/cupl/pets.json"
    sha = hashlib.sha256(body).hexdigest()
    d = D.read_descriptions(url, tmp_path / "cache", sha256=sha)
    assert d.sha256 == sha and d.name == "pets" and d.source == url and d.texts["dog"] == ["a dog", "a puppy"]
    routes.pop("/cupl/pets.json")  # offline from here on: the verified copy serves
    assert D.read_descriptions(url, tmp_path / "cache", sha256=sha).texts == d.texts
    assert D.read_descriptions(url, tmp_path / "cache").sha256 == sha
    with pytest.raises(PromptError, match="sha256"):
        routes["/other/pets.json"] = (200, body, None)
        D.read_descriptions(f"{base}/other/pets.json", tmp_path / "cache", sha256="0" * 64)
    # nothing listens on port 9: no network, and nothing cached for this URL
    with pytest.raises(PromptError) as e:
        D.read_descriptions("http://127.0.0.1:9/x/food.json", tmp_path / "cache")
    msg = str(e.value)
    assert "http://127.0.0.1:9/x/food.json" in msg and "prompts.descriptions=/path/to/food.json" in msg and "\n" not in msg


# ---------------------------------------------------------------- experiments on tiny features

def brute_argmax_correct(model, image, labels, feats):
    return score(model, image, feats.t()).argmax(1).eq(labels)


@pytest.fixture(scope="module")
def tiny_setup(tiny_vit):
    names = ["cat", "dog", "bus", "tree"]
    templates = ["a photo of a {}.", "art of a {}."]
    own = [["whiskers", "a tail", "fur"], ["a wet nose", "four legs"], ["wheels", "a driver", "windows", "a yellow body"],
           ["leaves", "bark", "roots"]]
    texts = encode_class_prompts(tiny_vit, D.class_prompts(own, names, templates, "descriptors"))
    torch.manual_seed(0)
    labels = torch.arange(48) % 4
    centres = aggregate_features(texts, "embedding_mean")
    image = F.normalize(centres[labels] + 0.35 * torch.randn(48, tiny_vit.embed_dim), dim=-1)
    return names, templates, own, texts, image, labels


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_leave_one_text_out_equals_brute_force(tiny_vit, tiny_setup, aggregate):
    names, _, _, texts, image, labels = tiny_setup
    table = leave_one_text_out(tiny_vit, image, labels, names, texts, aggregate)
    base = brute_argmax_correct(tiny_vit, image, labels, aggregate_features(texts, aggregate))
    assert len(table) == len(texts.prompts)
    for j, row in enumerate(table.itertuples()):
        keep = [k for k in range(len(texts.prompts)) if k != j]
        sub = type(texts)(texts.features[keep], texts.owner[keep], [texts.prompts[k] for k in keep], texts.n_classes)
        now = brute_argmax_correct(tiny_vit, image, labels, aggregate_features(sub, aggregate))
        own = labels == row.class_index
        assert row.text == texts.prompts[j]
        assert row.loo_top1_delta == pytest.approx(now.float().mean().item() - base.float().mean().item(), abs=1e-9)
        assert row.loo_class_accuracy_delta == pytest.approx(now[own].float().mean().item() - base[own].float().mean().item(), abs=1e-9)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_greedy_text_selection_equals_brute_force(tiny_vit, tiny_setup, aggregate):
    _, _, _, texts, image, labels = tiny_setup
    chosen = greedy_text_selection(tiny_vit, image, labels, texts, aggregate)
    full = aggregate_features(texts, aggregate)
    for c in range(texts.n_classes):
        rows = texts.of_class(c).tolist()
        picked, best = [], -1.0
        while len(picked) < len(rows):
            accs = []
            for j in rows:
                if j in picked:
                    accs.append(-1.0)
                    continue
                sub = type(texts)(texts.features[picked + [j]], texts.owner[picked + [j]], [], texts.n_classes)
                feats = full.clone()
                feats[c] = aggregate_features(sub, aggregate)[c]
                accs.append(brute_argmax_correct(tiny_vit, image, labels, feats).float().mean().item())
            k = int(np.argmax(accs))
            if accs[k] <= best + 1e-12:
                break
            best = accs[k]
            picked.append(rows[k])
        assert chosen[c] == picked, c


def test_experiments_end_to_end(tiny_vit, tiny_setup, tmp_path):
    names, templates, own, _, image, labels = tiny_setup
    descriptions = {"dclip-ish": D.class_prompts(own, names, templates, "descriptors"),
                    "dclip-ish + templates": D.class_prompts(own, names, templates, "descriptors", combine="add")}
    random_sets = {"waffle 3": {s: D.class_prompts(waffle.waffle_texts(names, 3, s), names, templates, "descriptors") for s in (0, 1, 2)},
                   "swapped": {s: D.class_prompts(waffle.control_texts(own, "swapped", s), names, templates, "descriptors") for s in (0, 1)}}
    result = run_description_experiments(tiny_vit, image, labels, names, templates, descriptions, random_sets=random_sets,
                                         aggregate=["score_mean", "embedding_mean"], bootstrap=200, seed=0)
    rows = pd.DataFrame(result["rows"])
    assert rows.kind.tolist().count("descriptions") == 4 and rows.kind.tolist().count("random") == 10
    tested = rows[rows.kind != "templates"]
    assert (tested.p_vs_templates_holm >= tested.p_vs_templates - 1e-12).all() and tested.p_vs_templates.between(0, 1).all()
    assert (rows.top1_ci_low <= rows.top1).all() and (rows.top1 <= rows.top1_ci_high).all()
    waffle_rows = rows[(rows["set"] == "waffle 3") & (rows["aggregate"] == "score_mean")]
    summary = next(s for s in result["random_summary"] if s["set"] == "waffle 3" and s["aggregate"] == "score_mean")
    assert summary["top1"] == pytest.approx(waffle_rows.top1.mean()) and summary["top1_std"] == pytest.approx(waffle_rows.top1.std(ddof=0))
    # the description row's top-1 is the classifier's, computed independently
    w = build_class_classifier(tiny_vit, descriptions["dclip-ish"], "score_mean")
    expected = brute_argmax_correct(tiny_vit, image, labels, w.t()).float().mean().item()
    assert rows.set_index("name").loc["dclip-ish [score_mean]", "top1"] == pytest.approx(expected)
    per_class = result["per_class"]
    assert len(per_class) == 8 and (per_class.delta == per_class.accuracy - per_class.accuracy_templates).all()
    held = pd.DataFrame(result["heldout"])
    assert result["selection_images"] + result["heldout_images"] == len(labels)
    assert set(held.n_images) == {result["heldout_images"], result["selection_images"]}
    assert len(result["selection"]) == 8 and (result["selection"].n_selected >= 1).all()
    write_description_outputs(tmp_path, result, "tiny")
    for f in ("descriptions.csv", "per_class_descriptions.csv", "per_class_descriptions.png", "description_texts.csv",
              "description_selection.csv"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert len(pd.read_csv(tmp_path / "description_texts.csv")) == sum(len(t) for t in own) + sum(len(t) + len(templates) for t in own)
    text = (tmp_path / "descriptions.csv").read_text()
    written = pd.read_csv(tmp_path / "descriptions.csv", dtype=str, keep_default_na=False)
    for col in ("n_prompts", "seed", "n_images"):  # counts as integers (300, not 300.0), also beside rows without them
        if col in written:
            assert all(v == "" or v.lstrip("-").isdigit() for v in written[col]), (col, text[:500])


# ---------------------------------------------------------------- from the prompts.* settings

def yaml_prompts(**overrides) -> dict:
    """The prompts.* class-prompt keys as configs/prompts/dataset.yaml sets them (the only place defaults live)."""
    import yaml

    from zeroshot.prompts.class_sets import KEYS

    doc = yaml.safe_load((REPO / "configs" / "prompts" / "dataset.yaml").read_text())
    return {**{k: doc[k] for k in KEYS}, **overrides}


def test_resolve_class_prompt_sets(tmp_path):
    from zeroshot.prompts.class_sets import resolve_class_prompt_sets as resolve_sets

    def resolve_class_prompt_sets(p, *args):
        return resolve_sets(yaml_prompts(**p), *args)

    names, templates = ["owl", "cat"], ["a photo of a {}."]
    assert resolve_class_prompt_sets({}, names, templates)["main"] is None
    path = tmp_path / "birds.json"
    path.write_text(json.dumps({"cat": ["whiskers"], "Owl": ["big eyes", "feathers"]}))
    out = resolve_class_prompt_sets({"descriptions": str(path), "descriptions_mode": "descriptors"}, names, templates)
    main = out["main"]
    assert main is out["descriptions"] and main.kind == "descriptions" and main.label == f"birds#{main.digest[:8]}"
    assert main.prompts == [["owl, which has big eyes.", "owl, which has feathers."], ["cat, which has whiskers."]]
    assert main.record["descriptions_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert main.record["mapping"]["respelled"] == [["Owl", "owl"]]
    labels = {main.label}
    for change in ({"aggregate": "score_mean"}, {"combine": "add"}, {"descriptions_mode": "sentences"},
                   {"descriptor_pattern": D.PAPER_CODE_PATTERN}):
        other = resolve_class_prompt_sets({"descriptions": str(path), "descriptions_mode": "descriptors", **change}, names, templates)
        labels.add(other["main"].label)
    assert len(labels) == 5
    w = resolve_class_prompt_sets({"waffle": 3, "seeds": [4, 5], "aggregate": "score_mean"}, names, templates)
    assert list(w["random"]["waffle3"]) == [4, 5] and w["main"] is w["random"]["waffle3"][4] and w["descriptions"] is None
    assert w["random"]["waffle3"][4].digest != w["random"]["waffle3"][5].digest and len(w["main"].prompts[0]) == 6
    both = resolve_class_prompt_sets({"descriptions": str(path), "descriptions_mode": "descriptors", "waffle": 2,
                                      "waffle_with_descriptions": True, "controls": ["swapped"], "seeds": [0]}, names, templates)
    assert both["main"].prompts[0][:2] == main.prompts[0] and len(both["main"].prompts[0]) == 6
    assert both["descriptions"].digest == main.digest and list(both["random"]) == ["birds swapped", "waffle2+descriptors"]
    with pytest.raises(PromptError, match="give prompts.descriptions"):
        resolve_class_prompt_sets({"controls": ["swapped"]}, names, templates)
    with pytest.raises(PromptError, match="descriptions_mode=descriptors"):
        resolve_class_prompt_sets({"descriptions": str(path), "waffle": 2, "waffle_with_descriptions": True}, names, templates)


def test_missing_keys_say_where_defaults_live():
    from zeroshot.prompts.class_sets import resolve_class_prompt_sets

    with pytest.raises(PromptError, match="configs/prompts/dataset.yaml"):
        resolve_class_prompt_sets({"descriptions": None}, ["a"], ["{}"])


# ---------------------------------------------------------------- end to end: eval and prompts on a descriptions file

def test_eval_and_prompts_on_a_descriptions_file(tmp_path, tiny_checkpoint):

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.commands.prompts import run_prompts

    images = write_imagefolder(tmp_path / "pets", ["cat", "dog"], per_class=3)
    path = tmp_path / "pets_cupl.json"
    path.write_text(json.dumps({"Dog": ["A dog is a loyal animal.", "A photo of a dog on grass."],
                                "cat": ["A cat has whiskers."]}))
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={images}", "num_workers=0",
              "progress=false", f"cache_dir={tmp_path / 'cache'}", f"prompts.descriptions={path}"]
    m = evaluate(make_cfg("eval", *common, f"results_dir={tmp_path / 'results'}"))
    again = evaluate(make_cfg("eval", *common, f"results_dir={tmp_path / 'results'}", "prompts.aggregate=score_mean"))
    plain = evaluate(make_cfg("eval", *common[:-1], f"results_dir={tmp_path / 'results'}"))
    summary = run_prompts(make_cfg("prompts", *common, f"results_dir={tmp_path / 'prompts'}", "prompts.waffle=2",
                                   "prompts.seeds=[0,1]", "bootstrap=50"))
    assert m["prompts"] == "pets_cupl" and m["prompts_label"].startswith("pets_cupl#")
    assert m["class_prompts"]["n_prompts"] == 3 and m["class_prompts"]["descriptions_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len({m["prompts_hash"], again["prompts_hash"], plain["prompts_hash"]}) == 3  # three report rows
    assert Path(m["run_dir"]).parent != Path(plain["run_dir"]).parent  # and their own run directories
    # the classifier is the class-specific one: its logits equal a direct build from the same prompts
    model, _ = zeroshot.load(tiny_checkpoint, device="cpu")
    z = np.load(Path(m["run_dir"]) / "logits.npz")
    feats = torch.load(next((tmp_path / "cache" / "image_features").rglob("chunk_*.pt")), weights_only=True)  # the cached image features
    w = build_class_classifier(model, [["A cat has whiskers."], ["A dog is a loyal animal.", "A photo of a dog on grass."]])
    ours = score(model, feats["features"], w).numpy()
    assert np.allclose(z["logits"], ours[np.argsort(feats["indices"].numpy())][z["indices"]], atol=1e-5)
    run = Path(summary["run_dir"])
    table = pd.read_csv(run / "descriptions.csv")
    assert summary["descriptions"]["rows"] and (run / "per_class_descriptions.csv").is_file()
    assert any("pets_cupl" in str(n) for n in table.iloc[:, :3].astype(str).values.ravel())
    assert any("waffle2" in str(n) for n in table.astype(str).values.ravel())


def test_build_classifier_offers_both_aggregations(tiny_vit):
    """Templates x class names under either aggregation equal the class-specific path on the same prompts."""
    names, templates = ["cat", "dog", "owl"], ["a photo of a {}.", "a {} in the wild.", "art of a {}."]
    prompts = [[t.replace("{}", c) for t in templates] for c in names]
    for aggregate in AGGREGATES:
        ours = build_classifier(tiny_vit, names, templates, aggregate=aggregate)
        assert torch.allclose(ours, build_class_classifier(tiny_vit, prompts, aggregate), atol=1e-6)
    assert not torch.allclose(build_classifier(tiny_vit, names, templates, aggregate="score_mean"),
                              build_classifier(tiny_vit, names, templates), atol=1e-4)
