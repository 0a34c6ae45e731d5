"""Regenerate zeroshot/reference/imagenet_wnids.json (output committed).

The facts (ImageNet's 1000 wnids in label order, and the 200-class subsets of ImageNet-A, ImageNet-R and
ImageNet-O) are read as data literals from the installed clip_benchmark package (MIT), where they are
published; nothing of its code is used. The shifts have no prompt files of their own: at run time their class
names are ImageNet's (any ImageNet prompt set) at the subset's positions (imagenet_shifts.subset_positions).

    pip install clip-benchmark && python tools/make_imagenet_subsets.py
"""
import ast
import json
from pathlib import Path

import clip_benchmark.datasets.builder as builder

REPO = Path(__file__).resolve().parents[1]
NAMES = {"all_imagenet_wordnet_ids": "imagenet", "imagenet_a_wnids": "imagenet_a", "imagenet_r_wnids": "imagenet_r",
         "imagenet_o_wnids": "imagenet_o"}


def literals() -> dict:
    found = {}
    for node in ast.walk(ast.parse(Path(builder.__file__).read_text())):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in NAMES:
            found[NAMES[node.targets[0].id]] = sorted(ast.literal_eval(node.value))
    return found


def main() -> None:
    lists = literals()
    imagenet = lists["imagenet"]
    assert len(imagenet) == 1000 and imagenet == sorted(imagenet)
    (REPO / "zeroshot" / "reference" / "imagenet_wnids.json").write_text(json.dumps(lists, indent=0) + "\n")
    for name in ("imagenet_a", "imagenet_r", "imagenet_o"):
        assert len(set(lists[name])) == 200 and set(lists[name]) <= set(imagenet), name
    print({k: len(v) for k, v in lists.items()})


if __name__ == "__main__":
    main()
