"""Small copies of the image-caption selection layouts, with the real file names and JSON fields: SugarCrepe's
seven annotation files over a COCO-style val2017/ (CIFAR-10 test JPEGs from ../shared), Winoground's parquet
and examples.jsonl + images/, ARO's Visual Genome JSONs with boxes over images/, an order set and a user JSONL
(PIL-made images)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import shared_path

SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
WORDS = ["dog", "cat", "red", "blue", "car", "tree", "on", "under", "big", "small", "man", "horse", "two", "grass"]


def caption(rng, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def write_sugar_crepe(root: Path, per_subset: int = 4, seed: int = 0) -> Path:
    """<root>/<subset>.json ({id: {filename, caption, negative_caption}}, ids as the files have them: strings, not
    contiguous) and <root>/val2017/<12-digit id>.jpg copied from CIFAR-10's test JPEGs; subsets share images."""
    cifar = shared_path("data", "cifar10-test")
    jpegs = sorted(cifar.glob("*/000[0-3].jpg"))[:10]
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    names = []
    for k, src in enumerate(jpegs):
        name = f"{139 + 1000 * k:012d}.jpg"
        (root / "val2017" / name).write_bytes(src.read_bytes())
        names.append(name)
    rng = np.random.default_rng(seed)
    for s, subset in enumerate(SUBSETS):
        ann = {str(3 * j + s): {"filename": names[(s + j) % len(names)], "caption": caption(rng),
                                "negative_caption": caption(rng)} for j in range(per_subset)}
        (root / f"{subset}.json").write_text(json.dumps(ann))
    return root


def png_bytes(rng, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def winoground_rows(n: int = 6, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    tags = ["Object", "Relation", "Both"]
    rows = []
    for i in range(n):
        words = rng.choice(WORDS, size=5)
        swapped = words.copy()
        swapped[[0, -1]] = swapped[[-1, 0]]
        rows.append({"id": i, "image_0": png_bytes(rng), "image_1": png_bytes(rng), "caption_0": " ".join(words),
                     "caption_1": " ".join(swapped), "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
                     "collapsed_tag": tags[i % 3]})
    return rows


def write_winoground_parquet(root: Path, rows: list[dict]) -> Path:
    """The Hub's layout: data/test-00000-of-00001.parquet, images as {bytes, path} structs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{**r, "image_0": {"bytes": r["image_0"], "path": None},
                                   "image_1": {"bytes": r["image_1"], "path": None}} for r in rows])
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
    return root


def write_winoground_jsonl(root: Path, rows: list[dict]) -> Path:
    """The original layout: examples.jsonl naming ex_<id>_img_<k>, and images/ex_<id>_img_<k>.png."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        entry = {k: v for k, v in r.items() if not k.startswith("image_")}
        for k in (0, 1):
            name = f"ex_{r['id']}_img_{k}"
            (root / "images" / f"{name}.png").write_bytes(r[f"image_{k}"])
            entry[f"image_{k}"] = name
        lines.append(json.dumps(entry))
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_aro_vg(root: Path, n: int = 12, seed: int = 2) -> Path:
    """visual_genome_relation.json and visual_genome_attribution.json over images/<vg id>.jpg, with boxes."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(4):
        name = f"{2300000 + k}.jpg"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(root / "images" / name)
        names.append(name)
    relations, attributes = [], []
    rel_names = ["on", "under", "wearing", "next to"]  # "next to" is one of ARO's symmetric relations
    for i in range(n):
        box = {"bbox_x": int(rng.integers(0, 30)), "bbox_y": int(rng.integers(0, 20)), "bbox_w": 40, "bbox_h": 30}
        base = {"image_id": names[i % 4][:-4], "image_path": names[i % 4], **box}
        relations.append({**base, "true_caption": f"the {WORDS[i % 5]} is {rel_names[i % 4]} the {WORDS[5 + i % 4]}",
                          "false_caption": f"the {WORDS[5 + i % 4]} is {rel_names[i % 4]} the {WORDS[i % 5]}",
                          "relation_name": rel_names[i % 4]})
        attributes.append({**base, "true_caption": f"the red {WORDS[i % 5]} and the blue {WORDS[5 + i % 4]}",
                           "false_caption": f"the blue {WORDS[i % 5]} and the red {WORDS[5 + i % 4]}",
                           "attributes": ["red", "blue"] if i % 3 else ["big", "small"]})
    (root / "visual_genome_relation.json").write_text(json.dumps(relations))
    (root / "visual_genome_attribution.json").write_text(json.dumps(attributes))
    return root


def write_order(root: Path, n: int = 5, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        name = f"val2014/COCO_val2014_{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name)
        words = list(rng.choice(WORDS, size=6))
        options = [" ".join(words)] + [" ".join(rng.permutation(words)) for _ in range(4)]
        if i == 0:
            options[2] = options[0]  # a perturbation that left the order as it was: a tie the true caption wins
        cases.append({"image": name, "caption_options": options})
    (root / "coco_order_test.json").write_text(json.dumps(cases))
    return root


def write_user_jsonl(root: Path, seed: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "img" / f"{k}.png")
    lines = [{"image": "img/0.png", "captions": ["a wrong one", "the right one", "another wrong"], "answer": 1, "group": "a"},
             {"image": "img/1.png", "captions": ["right", "wrong"], "answer": 0, "group": "b"},
             {"images": ["img/1.png", "img/2.png"], "captions": ["of one", "of two"], "group": "a"}]
    (root / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return root / "mine.jsonl"


def write_winoground_repo(root: Path, rows: list[dict]) -> Path:
    """The Hub repo's own files: data/examples.jsonl and data/images.zip (the images read from the zip in place)."""
    import zipfile

    staging = write_winoground_jsonl(root / "staging", rows)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (staging / "examples.jsonl").rename(root / "data" / "examples.jsonl")
    with zipfile.ZipFile(root / "data" / "images.zip", "w") as z:
        for png in sorted((staging / "images").iterdir()):
            z.write(png, f"images/{png.name}")
    import shutil

    shutil.rmtree(staging)
    return root
