"""Regenerate prompts/*.json from the published lists in ../shared/reference (run once; the output is committed).

Class names are put in each dataset's own label order (torchvision's), which is not always the
order of the published lists: OpenAI lists Oxford Pets cats-first and EuroSAT in its own order,
and its Caltech101 list starts with a "background" class that torchvision's Caltech101 drops.
"""
import ast
import json
import re
import sys
from pathlib import Path

REF = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "reference")
OUT = Path(__file__).resolve().parents[1] / "prompts"
OPENAI = "OpenAI CLIP data/prompts.md (MIT)"


def openai_lists() -> dict:
    lists = {}
    for section in re.split(r"\n## ", (REF / "openai_clip_prompts.md").read_text())[1:]:
        name = section.split("\n")[0].strip()
        block = re.search(r"```(?:bash|python)?\n(.*?)```", section, re.S).group(1)
        # each block is two list literals, `classes = [...]` and `templates = [...]`
        names = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(block).body}
        lists[name] = (names["classes"], names["templates"])
    return lists


def write(name: str, classnames: list, templates: list, source: str, **extra) -> None:
    assert all(t.count("{}") == 1 for t in templates), name
    doc = {"name": name, "source": source, "classnames": classnames, "templates": templates, **extra}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    oa = openai_lists()
    cb_names = json.loads((REF / "clip_benchmark_en_classnames.json").read_text())
    cb_templates = json.loads((REF / "clip_benchmark_en_templates.json").read_text())
    same_order = {
        "cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10", "food101": "Food101",
        "flowers102": "Flowers102", "dtd": "DescribableTextures", "gtsrb": "GTSRB",
        "fgvc_aircraft": "FGVCAircraft", "stanford_cars": "StanfordCars", "country211": "Country211",
        "sun397": "SUN397",
    }
    for ours, theirs in same_order.items():
        classes, templates = oa[theirs]
        write(ours, classes, templates, OPENAI)

    classes, templates = oa["MNIST"]
    write("mnist", classes, templates, OPENAI)

    # torchvision's OxfordIIITPet order is alphabetical by breed, cats and dogs mixed.
    classes, templates = oa["OxfordPets"]
    by_lower = {c.lower(): c for c in classes}
    write("oxford_pets", [by_lower[c.lower()] for c in cb_names["pets"]], templates,
          OPENAI + ", reordered to torchvision's label order")

    # torchvision's EuroSAT is an ImageFolder: sorted folder names.
    classes, templates = oa["EuroSAT"]
    folder_to_openai = {
        "AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "brushland or shrubland",
        "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
        "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
        "Residential": "residential buildings or homes or apartments", "River": "river", "SeaLake": "lake or sea",
    }
    assert set(folder_to_openai.values()) == set(classes)
    write("eurosat", [folder_to_openai[f] for f in sorted(folder_to_openai)], templates,
          OPENAI + ", reordered to torchvision's label order (sorted folder names)")

    classes, templates = oa["Caltech101"]
    assert classes[0] == "background"
    write("caltech101", classes[1:], templates,
          OPENAI + ", without 'background' (torchvision's Caltech101 drops BACKGROUND_Google)")

    svhn_t = [t.replace("{c}", "{}") for t in cb_templates["svhn"]]
    write("svhn", cb_names["svhn"], svhn_t, "CLIP_benchmark en_classnames/en_templates (MIT)")

    fashion = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    write("fashion_mnist", fashion, oa["CIFAR10"][1],
          "torchvision FashionMNIST.classes (lowercased, 'T-shirt/top' as 't-shirt'); templates: OpenAI's CIFAR-10 set")

    imagenet = json.loads((REF / "imagenet_prompts.json").read_text())
    write("imagenet", imagenet["classnames"], imagenet["templates_openai_80"],
          "OpenAI Prompt_Engineering_for_ImageNet notebook (edited class names, 80 templates)",
          template_sets={"openai_80": imagenet["templates_openai_80"], "simple_7": imagenet["templates_simple_7"]})
    write("imagenet_templates", [], imagenet["templates_openai_80"],
          "OpenAI's 80 ImageNet templates, no class names: the dataset names its classes (ObjectNet's mapping)")
    write("simple", [], ["a photo of a {}."], "CLIP paper's default prompt")

    # The rest of open_clip's 35: CLIP_benchmark's lists (what open_clip's published table used) where it has them,
    # else OpenAI's; in the label order of CLIP_benchmark's webdatasets (VTAB's, and VOC's standard class order).
    CB = "CLIP_benchmark en_classnames/en_templates (MIT)"

    def cb_t(key):
        return [t.replace("{c}", "{}") for t in cb_templates[key]]

    write("clevr_counts", cb_names["clevr_count_all"], cb_t("clevr_count_all"), CB + ": VTAB's labels 0..7 are counts 3..10")
    write("clevr_distance", cb_names["clevr_closest_object_distance"], cb_t("clevr_closest_object_distance"),
          CB + " (its fourth class name is empty, as published)")
    write("kitti_distance", cb_names["kitti_closest_vehicle_distance"], cb_t("kitti_closest_vehicle_distance"), CB)
    write("pcam", cb_names["pcam"], cb_t("pcam"), CB)
    write("rendered_sst2", oa["SST2"][0], cb_t("renderedsst2"), OPENAI + " class names (torchvision's order); " + CB + " templates")
    write("resisc45", oa["RESISC45"][0], cb_t("resisc45"),
          OPENAI + " class names (alphabetical, as VTAB's labels); " + CB + " templates")
    voc = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
           "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert set(voc) == set(oa["PascalVOC2007"][0])
    write("voc2007", voc, cb_t("voc2007"), OPENAI + " class names in VOC's standard label order; " + CB + " templates")
    write("voc2007_multilabel", voc, cb_t("voc2007_multilabel"), OPENAI + " class names in VOC's label order; " + CB + " templates")
    write("caltech101_vtab", cb_names["caltech101_vtab"], oa["Caltech101"][1],
          CB + " (VTAB's 102 classes with 'background', alphabetical); " + OPENAI + " templates")
    write("classname", [], ["{}"], "the bare class name")


if __name__ == "__main__":
    main()
