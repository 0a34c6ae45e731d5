"""Regenerate zeroshot/reference/published.csv from ../shared/reference (run once; the output is committed).

Rows: source, model (OpenAI's name), dataset (our config name), metric, value (%).
- clip_paper: the CLIP paper's zero-shot top-1 for the pairs listed in shared/README.md.
- open_clip: open_clip's re-measurement of OpenAI's weights (docs/openclip_classification_results.csv),
  where Pets, Flowers, Caltech101 and Aircraft are mean per-class recall and the rest top-1.
"""
import csv
import sys
from pathlib import Path

REF = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "reference")
OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference" / "published.csv"

MODELS = {"RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
          "ViT-B-32": "ViT-B/32", "ViT-B-16": "ViT-B/16", "ViT-L-14": "ViT-L/14", "ViT-L-14-336": "ViT-L/14@336px"}
COLUMNS = {"ImageNet 1k": "imagenet", "Caltech-101": "caltech101", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
           "Country211": "country211", "Describable Textures": "dtd", "EuroSAT": "eurosat", "FGVC Aircraft": "fgvc_aircraft",
           "Food-101": "food101", "GTSRB": "gtsrb", "MNIST": "mnist", "Oxford Flowers-102": "flowers102",
           "Oxford-IIIT Pet": "oxford_pets", "Stanford Cars": "stanford_cars", "STL-10": "stl10", "SUN397": "sun397",
           "SVHN": "svhn"}
MEAN_PER_CLASS = {"oxford_pets", "flowers102", "caltech101", "fgvc_aircraft"}
PAPER = [("ViT-B/32", "cifar10", 91.3), ("ViT-B/32", "cifar100", 65.1), ("ViT-B/32", "stl10", 97.2),
         ("ViT-B/32", "imagenet", 63.2), ("ViT-B/32", "food101", 84.4),
         ("RN50", "cifar10", 75.6), ("RN50", "cifar100", 41.6), ("RN50", "imagenet", 59.6)]


def metric(dataset: str) -> str:
    return "mean_per_class_recall" if dataset in MEAN_PER_CLASS else "top1"


def main() -> None:
    rows = [("clip_paper", m, d, metric(d), v) for m, d, v in PAPER]
    with open(REF / "openclip_classification_results.csv") as f:
        for r in csv.DictReader(f):
            if r["pretrained"] == "openai" and r["name"] in MODELS:
                for col, ds in COLUMNS.items():
                    if r.get(col):
                        rows.append(("open_clip", MODELS[r["name"]], ds, metric(ds), round(100 * float(r[col]), 2)))
    OUT.parent.mkdir(exist_ok=True)
    with open(OUT, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "model", "dataset", "metric", "value"])
        w.writerows(rows)
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main()
