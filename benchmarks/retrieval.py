"""Retrieval scoring: zeroshot's blocked recall@1/5/10 against CLIP_benchmark's zeroshot_retrieval.evaluate on the
same features (what DataComp's retr_eval.py calls), at Flickr30k's size (1,000 images x 5,000 captions) and,
for zeroshot alone unless --full, at MSCOCO's (5,000 x 25,000).

    python benchmarks/retrieval.py [--reps 5] [--full] [--json FILE]

Features are random but clustered (each caption is its image plus noise), so recalls sit well inside (0, 1)
and the two implementations must agree on every value. Only the scoring is timed: both get the same
precomputed fp32 features, CLIP_benchmark through a model whose encode_* look them up (64 images a batch, as
DataComp's loader; CLIP_benchmark scores in blocks of that batch size).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from common import interleaved, row, save_rows

from zeroshot.metrics.retrieval import retrieve


def features(n_images: int, per_image: int, dim: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, dim, generator=g)
    text_image = torch.arange(n_images).repeat_interleave(per_image)
    texts = images[text_image] + 7.0 * torch.randn(len(text_image), dim, generator=g)
    return images, texts, text_image


def clip_benchmark(images, texts, text_image, batch: int = 64) -> dict:
    from clip_benchmark.metrics import zeroshot_retrieval as zsr

    captions = [[] for _ in range(len(images))]
    for t, i in enumerate(text_image.tolist()):
        captions[i].append(t)

    class Lookup(torch.nn.Module):
        def encode_image(self, idx):
            return images[idx]

        def encode_text(self, idx):
            return texts[idx]

    batches = [(torch.arange(a, min(a + batch, len(images))), captions[a:a + batch]) for a in range(0, len(images), batch)]
    return zsr.evaluate(Lookup(), batches, lambda ids: torch.tensor(ids), "cpu", amp=False, recall_k_list=[1, 5, 10])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="CLIP_benchmark at MSCOCO's size too (minutes, ~1.5 GB)")
    ap.add_argument("--json")
    args = ap.parse_args()
    from functools import partialmethod

    import tqdm

    # CLIP_benchmark wraps its loop in tqdm: silenced, so the bar neither prints nor costs
    tqdm.tqdm.__init__ = partialmethod(tqdm.tqdm.__init__, disable=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    sizes = [(1000, 5, True), (5000, 5, args.full)]
    for n, per, with_ref in sizes:
        images, texts, text_image = features(n, per)
        ours = retrieve(images, texts, text_image).recalls()
        what = f"recall@1/5/10 both ways, {n:,} images x {n * per:,} captions"
        if with_ref:
            ref = clip_benchmark(images, texts, text_image)
            diff = max(abs(ours[k] - ref[k]) for k in ref)
            t = interleaved({"ours": lambda: retrieve(images, texts, text_image).recalls(),
                             "ref": lambda: clip_benchmark(images, texts, text_image)}, args.reps)
            row("retr", what, t["ours"], t["ref"], "CLIP_bm", "s", diff,
                f"mean_recall@1 {100 * ours['mean_recall@1']:.2f}% (both); max |recall diff| {diff:.1e}")
        else:
            start = time.perf_counter()
            retrieve(images, texts, text_image).recalls()
            row("retr", what, time.perf_counter() - start, None, "", "s", None,
                f"mean_recall@1 {100 * ours['mean_recall@1']:.2f}%; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    save_rows(args.json)


if __name__ == "__main__":
    sys.exit(main())
