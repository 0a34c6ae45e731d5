"""The speed sections of issue 6: image and text encoding against open_clip (and HF), the end-to-end eval,
memory, and the feature cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import (REPO, classifier_side_by_side, hf_vision_from_openai, imagenet_prompts, interleaved, matmul_peak,
                    open_clip_model, rel, row,
                    run_eval, save_random_checkpoint, subset_csv, tiny_checkpoint)
from zeroshot.models.config import build_model


def bench_image(args):
    flops = {"ViT-B-32-quickgelu": 2 * 4.41e9, "RN50-quickgelu": 2 * 4.12e9}  # 2 x multiply-adds per image
    peak = matmul_peak()
    for name in ("ViT-B-32-quickgelu", "RN50-quickgelu"):
        ref = open_clip_model(name)
        sd = ref.state_dict()
        ours = build_model(sd).requires_grad_(False)
        hf = hf_vision_from_openai(sd, ours) if name.startswith("ViT") else None
        for bs in (32, 64):
            torch.manual_seed(bs)
            x = torch.randn(bs, 3, 224, 224)
            with torch.inference_mode():
                a, b = ours.encode_image(x), ref.encode_image(x)
            fns = {"ours": lambda: ours.encode_image(x), "open_clip": lambda: ref.encode_image(x)}
            if hf is not None:
                fns["hf"] = lambda: hf(pixel_values=x).image_embeds
            t = interleaved(fns, args.reps)
            ips = bs / t["ours"]
            note = f"{ips * flops[name] / 1e9:.0f} GFLOP/s = {100 * ips * flops[name] / peak:.0f}% of matmul peak {peak / 1e9:.0f}"
            row("image", f"{name} encode_image bs={bs}", ips, bs / t["open_clip"], "open_clip", "img/s", rel(a, b), note)
            if hf is not None:
                with torch.inference_mode():
                    h = hf(pixel_values=x).image_embeds
                row("image", f"{name} encode_image bs={bs}", ips, bs / t["hf"], "hf", "img/s", rel(a, h))


def bench_text(args):
    from open_clip import get_tokenizer

    ref = open_clip_model("ViT-B-32-quickgelu")
    ours = build_model(ref.state_dict()).requires_grad_(False)
    classes, templates = imagenet_prompts(4 if args.quick else 10)
    ours_rate, ref_rate, diff, cos = classifier_side_by_side(ref, ours, get_tokenizer("ViT-B-32"), classes, templates)
    row("text", f"build_classifier {len(classes)} ImageNet classes x {len(templates)} templates", ours_rate, ref_rate,
        "open_clip", "prompts/s", diff, f"min cosine {cos:.7f}")
    # with repeats: several prompt sets share templates and classes, so prompts repeat across runs
    with torch.inference_mode():
        plain = lambda: ours.encode_text(__import__("zeroshot").tokenize(["a photo of a dog."] * 256))  # noqa: E731
        t = interleaved({"plain": plain}, 2)["plain"]
    row("text", "encode_text of one short prompt x256 (no dedupe)", 256 / t, None, "-", "prompts/s")


def bench_eval(args):
    n = 256 if args.quick else 1024
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv, ckpt = subset_csv(n, tmp), save_random_checkpoint(tmp)
        for workers in (0, 1, 2):
            m = run_eval(csv, ckpt, tmp / f"w{workers}", "cache=false", f"num_workers={workers}")
            share = m["data_wait_seconds"] / (m["data_wait_seconds"] + m["image_encode_seconds"])
            row("eval", f"end-to-end ViT-B/32 CIFAR-10 JPEGs n={n} workers={workers}", n / m["wall_seconds"], None, "-",
                "img/s", None, f"waiting on data {100 * share:.1f}% of image time; image step {n / m['image_encode_seconds']:.1f} img/s")


def bench_memory(args):
    sizes = (500, 2000) if args.quick else (1000, 5000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tiny_checkpoint(tmp)
        for n in sizes:
            csv = subset_csv(n, tmp)
            cmd = [sys.executable, "-m", "zeroshot", "eval", "dataset=csv", f"dataset.path={csv}", f"model.checkpoint={ckpt}",
                   f"results_dir={tmp / 'r' / str(n)}", "cache=false", "progress=false", "num_workers=0"]
            # a fresh parent per measurement, so RUSAGE_CHILDREN's peak is this eval's alone
            probe = ("import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); "
                     "print('RSS_MB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024, 'RC', r.returncode)")
            r = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=REPO)
            if "RC 0" not in r.stdout:
                raise RuntimeError(r.stderr[-2000:])
            rss = float(r.stdout.split("RSS_MB")[-1].split()[0])
            n_done = json.loads(next((tmp / "r" / str(n)).rglob("metrics.json")).read_text())["n_images"]
            row("memory", f"peak RSS of eval, n={n_done} images (tiny model, 224px)", rss, None, "-", "MB", None,
                "the features and logits of 5k images are ~1 MB")


def bench_cache(args):
    """Issue 4: a second prompt experiment on the same model and dataset encodes no image."""
    n = 256 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv, ckpt = subset_csv(n, tmp), save_random_checkpoint(tmp)
        times = []
        for templates in ('["a photo of a {}."]', '["a drawing of a {}.","art of the {}."]'):
            cmd = [sys.executable, "-m", "zeroshot", "prompts", "dataset=csv", f"dataset.path={csv}", f"model.checkpoint={ckpt}",
                   f"results_dir={tmp / 'r'}", f"cache_dir={tmp / 'cache'}", "progress=false", f"prompts.templates={templates}",
                   "bootstrap=200"]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            times.append(time.perf_counter() - t)
            if r.returncode:
                raise RuntimeError(r.stderr[-2000:])
            summary = json.loads(sorted((tmp / "r").rglob("summary.json"), key=os.path.getmtime)[-1].read_text())
            print(f"  prompt experiment: {summary['images_encoded']} images encoded, {summary['images_from_cache']} from cache, {times[-1]:.1f}s")
        row("cache", f"2nd prompt experiment vs 1st, ViT-B/32, {n} CIFAR-10 JPEGs", times[0] / times[1], None, "-", "x faster",
            None, f"first {times[0]:.1f}s, second {times[1]:.1f}s")
