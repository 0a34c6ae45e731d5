"""SugarCrepe throughput: `zeroshot compositionality` against CLIP_benchmark's loop (its SugarCrepe dataset, a
DataLoader with its image_captions_collate_fn, image_caption_selection.evaluate) over the seven subsets, on the
same random ViT-B-32-quickgelu weights (open_clip's, seeded), in one process with the same threads.

    python benchmarks/compositionality.py [--per-subset 30] [--images 60] [--reps 2] [--json FILE]

The layout is SugarCrepe's: seven <subset>.json over a val2017/ of 640x480 JPEGs, the subsets drawing their
images from one pool (as SugarCrepe's subsets share COCO images). zeroshot's time is its whole run (model
loading, fingerprint, images and captions encoded once each, scoring, the run directory; cache=false, figures
off); CLIP_benchmark's is its loop over the subsets with the model already built, each subset's images and
captions encoded as they come (its CLI default of 4 loader workers, here 2 for 2 cores). Every subset's text
accuracy must be equal.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO, open_clip_model, row, save_random_checkpoint, save_rows

SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
WORDS = "a dog cat red blue car tree on under big small man horse two grass white black sits next to the".split()


def write_layout(root: Path, n_images: int, per_subset: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n_images):  # smooth colour fields (upscaled noise): JPEG sizes and decode costs like photos
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        name = f"{k:012d}.jpg"
        Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(root / "val2017" / name, quality=90)
        names.append(name)
    for s, subset in enumerate(SUBSETS):
        ann = {}
        for j in range(per_subset):
            words = list(rng.choice(WORDS, size=int(rng.integers(6, 14))))
            ann[str(j)] = {"filename": names[int(rng.integers(n_images))], "caption": " ".join(words),
                           "negative_caption": " ".join(rng.permutation(words))}
        (root / f"{subset}.json").write_text(json.dumps(ann))
    return root


def ours(root: Path, ckpt: Path, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from zeroshot.commands.compositionality import run_compositionality

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("compositionality", overrides=[f"model.checkpoint={ckpt}", f"dataset.root={root}", "cache=false",
                                                     "figures=false", "progress=false", f"results_dir={out}"])
    return run_compositionality(cfg)


def clip_benchmark(root: Path, model, preprocess, tokenizer) -> dict:
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics.image_caption_selection import evaluate

    out = {}
    for subset in SUBSETS:
        ds = SugarCrepe(str(root / "val2017"), str(root / f"{subset}.json"), transform=preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2, collate_fn=image_captions_collate_fn)
        out[subset] = evaluate(model, loader, tokenizer, "cpu", amp=False)["text_acc"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-subset", type=int, default=30)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    from functools import partialmethod

    import open_clip
    import tqdm

    tqdm.tqdm.__init__ = partialmethod(tqdm.tqdm.__init__, disable=True)  # CLIP_benchmark's bar: silenced
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = write_layout(tmp / "sugar_crepe", args.images, args.per_subset)
        ckpt = save_random_checkpoint(tmp)
        model = open_clip_model("ViT-B-32-quickgelu")
        _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32-quickgelu")
        tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
        times = {"ours": [], "ref": []}
        for rep in range(args.reps + 1):  # the first round warms both up and is not counted
            t = time.perf_counter()
            m = ours(root, ckpt, tmp / f"results{rep}")
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():
                ref = clip_benchmark(root, model, preprocess, tokenizer)
            t_ref = time.perf_counter() - t
            if rep:
                times["ours"].append(t_ours)
                times["ref"].append(t_ref)
        diff = max(abs(m["subsets"][s] - ref[s]) for s in SUBSETS)
        n = 7 * args.per_subset
        t_ours, t_ref = float(np.median(times["ours"])), float(np.median(times["ref"]))
        row("compos", f"SugarCrepe, {n} instances over {m['n_images']} images", n / t_ours, n / t_ref, "CLIP_bm",
            "inst/s", diff, f"{t_ours:.1f} s vs {t_ref:.1f} s; subsets equal (max |diff| {diff:.1e}); "
                            f"{m['n_captions']} unique captions")
    save_rows(args.json)


if __name__ == "__main__":
    sys.exit(main())
