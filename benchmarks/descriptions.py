"""Issue 19's text-cost row: a classifier from CuPL's CIFAR-100 sentences (100 classes, 4,000 sentences), zeroshot's
build_class_classifier against open_clip's text tower on the same random ViT-B-32 weights.

The reference is the loop CLIP_benchmark runs for a file of class-specific prompts: per class, tokenize its
sentences (open_clip's tokenizer pads every prompt to 77 tokens), encode_text, normalize, average, renormalize.
zeroshot encodes the unique sentences in length-sorted batches, each cut to its longest prompt.

    python benchmarks/descriptions.py [--classes 100] [--json FILE]
It needs ../shared/reference/descriptions/cupl/cifar100_prompts_full.json and open_clip.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from common import SHARED, open_clip_model, rel, row, save_rows
from zeroshot.models.config import build_model

CUPL = SHARED / "reference" / "descriptions" / "cupl" / "cifar100_prompts_full.json"


def reference_classifier(model, tokenizer, class_prompts: list[list[str]]) -> torch.Tensor:
    weights = []
    for prompts in class_prompts:
        feats = F.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1)
        weights.append(F.normalize(feats.mean(0), dim=-1))
    return torch.stack(weights, dim=1)  # [D, C]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=100, help="the first N classes of the file's CIFAR-100 label order")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not CUPL.is_file():
        raise SystemExit(f"{CUPL} is needed for this benchmark")
    from open_clip import get_tokenizer

    from zeroshot.classifier import build_class_classifier
    from zeroshot.prompts.descriptions import class_prompts, map_descriptions, read_descriptions
    from zeroshot.models.tokenizer import default_tokenizer

    from zeroshot.paths import prompts_dir

    names = json.loads((prompts_dir() / "cifar100.json").read_text())["classnames"]
    desc = read_descriptions(CUPL)
    prompts = class_prompts(map_descriptions(desc.texts, names, CUPL.name), names, [], "sentences")[: args.classes]
    n = sum(len(p) for p in prompts)
    lengths = [len(default_tokenizer().encode(p)) + 2 for ps in prompts for p in ps]
    print(f"{len(prompts)} classes, {n} sentences, tokens per sentence: mean {sum(lengths) / n:.1f}, max {max(lengths)}")

    ref = open_clip_model("ViT-B-32-quickgelu")
    ours = build_model(ref.state_dict()).requires_grad_(False)
    tokenizer = get_tokenizer("ViT-B-32")
    with torch.inference_mode():
        warm = [prompts[0][:8]]  # first-call costs (allocator, kernels) out of both timings
        build_class_classifier(ours, warm), reference_classifier(ref, tokenizer, warm)
        t0 = time.perf_counter()
        w_ours = build_class_classifier(ours, prompts, "embedding_mean")
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        w_ref = reference_classifier(ref, tokenizer, prompts)
        t_ref = time.perf_counter() - t0
    cos = F.cosine_similarity(w_ref.t(), w_ours.t(), dim=-1).min().item()
    row("text", f"CuPL CIFAR-100 class classifier, {len(prompts)} classes x {n} sentences", n / t_ours, n / t_ref,
        "open_clip", "prompts/s", rel(w_ours, w_ref), f"min cosine {cos:.7f}; {t_ours:.1f} s vs {t_ref:.1f} s; "
        f"{torch.get_num_threads()} threads")
    save_rows(args.json)


if __name__ == "__main__":
    main()
