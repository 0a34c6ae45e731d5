"""Regenerate zeroshot/reference/published.csv from ../shared/reference (run once; the output is committed).

Rows: source, release, dataset (our config name), metric, value (%).
- release: "ARCH/TAG" with open_clip's architecture name less any -quickgelu (the same weights under both
  spellings), e.g. "ViT-B-32/openai", "ViT-H-14/dfn5b".
- clip_paper: the CLIP paper's zero-shot top-1 for the pairs listed in shared/README.md.
- open_clip: open_clip's measurements of every model in docs/openclip_classification_results.csv, in each
  dataset's main metric as DataComp's task list gives it (datacomp_tasklist.yml), plus the 35-dataset average.
"""
import csv
import sys
from pathlib import Path

import yaml

REF = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "reference")
OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference" / "published.csv"

# open_clip's column -> (our dataset config, DataComp task key)
COLUMNS = {
    "ImageNet 1k": ("imagenet", "imagenet1k"), "Caltech-101": ("caltech101", "vtab/caltech101"),
    "CIFAR-10": ("cifar10", "cifar10"), "CIFAR-100": ("cifar100", "vtab/cifar100"),
    "CLEVR Counts": ("clevr_counts", "vtab/clevr_count_all"), "CLEVR Distance": ("clevr_distance", "vtab/clevr_closest_object_distance"),
    "Country211": ("country211", "country211"), "Describable Textures": ("dtd", "vtab/dtd"),
    "EuroSAT": ("eurosat", "vtab/eurosat"), "FGVC Aircraft": ("fgvc_aircraft", "fgvc_aircraft"),
    "Food-101": ("food101", "food101"), "GTSRB": ("gtsrb", "gtsrb"), "ImageNet Sketch": ("imagenet_sketch", "imagenet_sketch"),
    "ImageNet v2": ("imagenetv2", "imagenetv2"), "ImageNet-A": ("imagenet_a", "imagenet-a"), "ImageNet-O": ("imagenet_o", "imagenet-o"),
    "ImageNet-R": ("imagenet_r", "imagenet-r"), "KITTI Vehicle Distance": ("kitti_distance", "vtab/kitti_closest_vehicle_distance"),
    "MNIST": ("mnist", "mnist"), "ObjectNet": ("objectnet", "objectnet"), "Oxford Flowers-102": ("flowers102", "vtab/flowers"),
    "Oxford-IIIT Pet": ("oxford_pets", "vtab/pets"), "Pascal VOC 2007": ("voc2007", "voc2007"), "PatchCamelyon": ("pcam", "vtab/pcam"),
    "Rendered SST2": ("rendered_sst2", "renderedsst2"), "RESISC45": ("resisc45", "vtab/resisc45"), "Stanford Cars": ("stanford_cars", "cars"),
    "STL-10": ("stl10", "stl10"), "SUN397": ("sun397", "sun397"), "SVHN": ("svhn", "vtab/svhn"), "iWildCam": ("iwildcam", "wilds/iwildcam"),
    "Camelyon17": ("camelyon17", "wilds/camelyon17"), "FMoW": ("fmow", "wilds/fmow"),
    "Dollar Street": ("dollar_street", "fairness/dollar_street"), "GeoDE": ("geode", "fairness/geode"),
}
# DataComp's metric names -> the names zeroshot's metrics.json uses
METRICS = {"acc1": "top1", "mean_per_class_recall": "mean_per_class_recall", "F1-macro_all": "macro_f1",
           "acc_worst_region": "worst_region_top1", "acc_top5_wg": "worst_group_top5", "acc_wg": "worst_group_top1"}
PAPER = [("ViT-B-32/openai", "cifar10", 91.3), ("ViT-B-32/openai", "cifar100", 65.1), ("ViT-B-32/openai", "stl10", 97.2),
         ("ViT-B-32/openai", "imagenet", 63.2), ("ViT-B-32/openai", "food101", 84.4),
         ("RN50/openai", "cifar10", 75.6), ("RN50/openai", "cifar100", 41.6), ("RN50/openai", "imagenet", 59.6)]


def release(name: str, tag: str) -> str:
    return f"{name.removesuffix('-quickgelu')}/{tag}"


def main() -> None:
    tasks = yaml.safe_load((REF / "datacomp_tasklist.yml").read_text())
    metric = {ds: METRICS[tasks[key].get("main_metric", "acc1")] for ds, key in COLUMNS.values()}
    rows = [("clip_paper", r, d, metric[d], v) for r, d, v in PAPER]
    with open(REF / "openclip_classification_results.csv") as f:
        for r in csv.DictReader(f):
            rel = release(r["name"], r["pretrained"])
            for col, (ds, _) in COLUMNS.items():
                if r.get(col):
                    rows.append(("open_clip", rel, ds, metric[ds], round(100 * float(r[col]), 2)))
            if r.get("Average perf. on 35 datasets"):
                rows.append(("open_clip", rel, "average_35", "average", round(100 * float(r["Average perf. on 35 datasets"]), 2)))
    seen, unique = set(), []
    for row in rows:  # one set of weights may be listed under both spellings of its architecture
        if row[:3] not in seen:
            seen.add(row[:3])
            unique.append(row)
    write_table(OUT, unique)


def write_table(out: Path, rows: list) -> None:
    """A published-numbers table: one (source, release, dataset, metric, value) row per number."""
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "release", "dataset", "metric", "value"])
        w.writerows(rows)
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()
