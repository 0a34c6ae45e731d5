"""Regenerate zeroshot/reference/imagenet_wnids.json and the ImageNet-A/R/O prompt files (outputs committed).

The facts (ImageNet's 1000 wnids in label order, and the 200-class subsets of ImageNet-A, ImageNet-R and
ImageNet-O) are read as data literals from the installed clip_benchmark package (MIT), where they are
published; nothing of its code is used. The subsets' class names are OpenAI's ImageNet names at the
subset's positions, so the prompt files stay in each dataset's label order (sorted wnid folders).

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
    prompts = json.loads((REPO / "prompts" / "imagenet.json").read_text())
    for name in ("imagenet_a", "imagenet_r", "imagenet_o"):
        subset = set(lists[name])
        assert len(subset) == 200 and subset <= set(imagenet), name
        names = [c for c, w in zip(prompts["classnames"], imagenet) if w in subset]
        doc = {"name": name, "source": f"OpenAI's ImageNet names at {name}'s 200 wnids (CLIP_benchmark's list), "
                                      "in sorted-wnid label order; OpenAI's 80 ImageNet templates",
               "classnames": names, "templates": prompts["templates"]}
        (REPO / "prompts" / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print({k: len(v) for k, v in lists.items()})


if __name__ == "__main__":
    main()
