"""Issue 32: the prompt loop's latency. PromptLab scores a new set of 4 templates on 1,000 classes (4,000 prompts
through the text encoder, then top-1, the bootstrap CI and the paired p-value), and the same set again with every
prompt in the text cache. Random-weight ViT-B/32 (open_clip's architecture, saved as a state dict), 1,000
synthetic class names, synthetic image features (the scoring's cost depends on their count, not their values).

    python benchmarks/prompt_lab.py [--images 10000] [--precision fp32 bf16] [--threads 2] [--reps 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("red green blue small large old young striped spotted wild little great northern southern golden silver "
         "crested common giant dwarf").split()
NOUNS = ("heron finch beetle maple tulip trout otter falcon lizard orchid moth badger cedar lantern kettle anchor "
         "violin tractor harbor canyon castle meadow glacier pottery saddle lighthouse compass ladder blanket "
         "marble quilt parrot mantis walrus coral thistle bison sparrow cactus tortoise salmon pelican hedgehog "
         "chisel bonnet spindle barrel").split()


def class_names(n: int = 1000) -> list[str]:
    """n distinct two- and three-word names ("golden heron", "old striped kettle"), deterministic."""
    names = [f"{w} {x}" for w in WORDS for x in NOUNS]
    names += [f"{a} {b} {x}" for a in WORDS for b in WORDS if a != b for x in NOUNS]
    return names[:n]


def fresh_templates(rep: int) -> list[str]:
    """4 templates no earlier repetition used (so none is in the text cache)."""
    tag = NOUNS[rep % len(NOUNS)] + f" {rep}"
    return [f"a photo of a {{}}, seen near the {tag}.", f"a blurry picture of the {{}} ({tag}).",
            f"itap of my {{}} by the {tag}.", f"a close-up of a {{}} at the {tag}."]


def measure(fn, expect_encoded: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the process's threads) of one call; on a shared machine the CPU time is the
    steadier figure (on an idle machine with 2 threads, wall is about CPU / 2 where both threads are busy)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.n_encoded == expect_encoded, result
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[10000])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    import zeroshot
    from zeroshot.features.cache import TextCache, model_key

    names = class_names()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = Path(tmp) / "vitb32.pt"
        torch.save(open_clip.create_model("ViT-B-32-quickgelu").state_dict(), ckpt)
        for precision in args.precision:
            model, _ = zeroshot.load(str(ckpt), device=args.device, precision=precision)
            cache = TextCache(Path(tmp) / f"cache-{precision}", model_key(model))
            for n in args.images:
                g = torch.Generator().manual_seed(n)
                lab = zeroshot.PromptLab.from_features(model, torch.randn(n, model.embed_dim, generator=g),
                                                       torch.randint(0, len(names), (n,), generator=g), names,
                                                       text_cache=cache)
                lab.score(fresh_templates(10_000 + n))  # warm-up: the baseline's 1,000 prompts, kernels, allocator
                new, cached = [], []
                for rep in range(args.reps):
                    templates = fresh_templates(rep * 100 + n)
                    new.append(measure(lambda: lab.score(templates), 4 * len(names)))
                    cached += [measure(lambda: lab.score(templates), 0) for _ in range(5)]
                    print(f"  {precision} images={n} rep {rep}: new {new[-1][0]:.2f} s wall, {new[-1][1]:.2f} CPU-s; "
                          f"cached {1000 * cached[-1][0]:.1f} ms wall, {1000 * cached[-1][1]:.1f} CPU-ms", flush=True)
                wall = lambda rows: statistics.median(r[0] for r in rows)  # noqa: E731
                cpu = lambda rows: statistics.median(r[1] for r in rows)  # noqa: E731
                print(f"{args.device} {precision} threads={args.threads} images={n}: new 4 templates x 1000 classes "
                      f"median {wall(new):.2f} s wall ({cpu(new):.2f} CPU-s); all cached median "
                      f"{1000 * wall(cached):.1f} ms wall ({1000 * cpu(cached):.1f} CPU-ms), min {1000 * min(r[0] for r in cached):.1f} ms",
                      flush=True)


if __name__ == "__main__":
    main()
