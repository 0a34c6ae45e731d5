"""Issue 34 (round four): bf16 on an AMX CPU, fused GEMM epilogues, attention by measurement, fast JPEG decoding,
end to end against CLIP_benchmark amp.

    python benchmarks/round4.py                 # everything; writes benchmarks/latest_round4.json
    python benchmarks/round4.py --only model    # sections: model, profile, decode, e2e, compile
    python benchmarks/round4.py --quick         # smaller batches, fewer repeats

Not a test: it asserts nothing about time. Every ratio comes from one process where the contenders alternate
rep by rep (this machine is shared): the fp32 model, the bf16 model as shipped (fused epilogues, attention by
measurement, folded BatchNorms), the bf16 model on round three's path (addmm + separate passes, GEMM-form
attention, BatchNorm after each convolution) and the bf16 GEMM itself on each of the model's linear shapes,
measured in the same loop so that the "share of the GEMM rate" divides two numbers taken under the same load. Best and median of the repeats are both kept; the spread between
them is the noise."""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import REPO, ROWS, open_clip_model, row  # noqa: E402

# name: (open_clip name, batch, quick batch)
ARCHS = {"ViT-B/32": ("ViT-B-32-quickgelu", 64, 16), "ViT-B/16": ("ViT-B-16-quickgelu", 16, 4),
         "ViT-L/14": ("ViT-L-14-quickgelu", 8, 2), "RN50": ("RN50-quickgelu", 32, 8)}


@contextlib.contextmanager
def round_three_path():
    """The bf16 path as round three shipped it: no fused epilogues, GEMM-form attention, no BatchNorm folding."""
    import functools

    from zeroshot.models import clip, layers

    saved, saved_conv_bn, env = layers.fuses_epilogues, clip.conv_bn, os.environ.get("ZEROSHOT_ATTENTION")
    layers.fuses_epilogues = lambda x: False
    clip.conv_bn = functools.partial(saved_conv_bn, fold=False)
    os.environ["ZEROSHOT_ATTENTION"] = "gemm"
    try:
        yield
    finally:
        layers.fuses_epilogues, clip.conv_bn = saved, saved_conv_bn
        if env is None:
            os.environ.pop("ZEROSHOT_ATTENTION")
        else:
            os.environ["ZEROSHOT_ATTENTION"] = env


def gemm_shapes(c, batch: int) -> tuple[dict[str, tuple[int, int, int]], int]:
    """(M, K, N) of the linears in one of the model's blocks (qkv, out_proj, c_fc, c_proj), and the block count.
    The ResNet's convolutions are not linears; its biggest 1x1 convolutions are GEMMs of about the shape given."""
    if not c.is_vit:
        return {"1x1 conv": (batch * 49, 2048, 512)}, 16
    m, d = batch * ((c.image_resolution // c.vision_patch_size) ** 2 + 1), c.vision_width
    h = round(d * c.vision_mlp_ratio)
    return {"qkv": (m, d, 3 * d), "out_proj": (m, d, d), "c_fc": (m, d, h), "c_proj": (m, h, d)}, c.vision_layers


def gemm_probes(shapes: dict, blocks: int) -> dict:
    """The model's GEMMs alone, as long as its own forward's (every block's linears, bf16, through F.linear and
    through oneDNN's fused linear), and the MLP's first GEMM once in fp32 and bf16 (round three's GEMM figure)."""
    from zeroshot.models.layers import _onednn_bf16, fused_linear

    data = {}
    for name, (m, k, n) in shapes.items():
        x, w, b = torch.randn(m, k), torch.randn(n, k) / k**0.5, torch.randn(n)
        data[name] = (x, w, b, x.bfloat16(), w.bfloat16(), b.bfloat16())

    def stack(fn):
        for _ in range(blocks):
            for _, _, _, x, w, b in data.values():
                fn(x, w, b)

    mlp = "c_fc" if "c_fc" in shapes else "1x1 conv"
    x, w, b, xb, wb, bb = data[mlp]
    # oneDNN's bf16 linear exists only where the CPU multiplies bf16 (not on an AVX2-only CPU, nor under an ISA cap)
    onednn = {"gemm bf16 onednn stack": lambda: stack(fused_linear)} if _onednn_bf16() else {}
    return {"gemm bf16 stack": lambda: stack(torch.nn.functional.linear), **onednn,
            "gemm fp32 mlp": lambda: torch.nn.functional.linear(x, w, b),
            "gemm bf16 mlp": lambda: torch.nn.functional.linear(xb, wb, bb)}


def alternate(fns: dict, reps: int) -> dict[str, list[float]]:
    """Seconds of every call, the functions alternating rep by rep (one warm-up each first)."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            f()
        for _ in range(reps):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return times


def flops_per_image(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_image(x)
    return counter.get_total_flops() / len(x)


def bench_model(args):
    from zeroshot.models.config import build_model
    from zeroshot.models.precision import convert_weights

    for name, (oc_name, batch, quick_batch) in ARCHS.items():
        if args.archs and name not in args.archs:
            continue
        batch = quick_batch if args.quick else batch
        ours = build_model(open_clip_model(oc_name).state_dict()).requires_grad_(False)
        half = convert_weights(copy.deepcopy(ours), torch.bfloat16)
        c = ours.config
        x = torch.randn(batch, 3, c.image_resolution, c.image_resolution, generator=torch.Generator().manual_seed(0))
        xb = x.bfloat16()

        def old():
            with round_three_path():
                return half.encode_image(xb)

        with torch.inference_mode():
            a32, a16, o16 = ours.encode_image(x), half.encode_image(xb).float(), old().float()
        cos = torch.nn.functional.cosine_similarity(a32, a16).min().item()
        cos_old = torch.nn.functional.cosine_similarity(a32, o16).min().item()
        shapes, blocks = gemm_shapes(c, batch)
        t = alternate({"fp32": lambda: ours.encode_image(x), "bf16": lambda: half.encode_image(xb), "bf16 round three": old,
                       **gemm_probes(shapes, blocks)}, args.reps)
        report_model(name, batch, flops_per_image(ours, x[:2]), shapes, blocks, t, cos, cos_old)
        del ours, half


STACK_NAMES = {"bf16": "F.linear", "bf16 onednn": "oneDNN"}


def report_model(name, batch, flops, shapes, blocks, t, cos, cos_old):
    best = {k: min(v) for k, v in t.items()}
    med = {k: statistics.median(v) for k, v in t.items()}
    stack_flops = blocks * sum(2 * m * k * n for m, k, n in shapes.values())
    calls = [k for k in ("bf16", "bf16 onednn") if f"gemm {k} stack" in t]
    stack = {k: stack_flops / best[f"gemm {k} stack"] for k in calls}
    rate = max(stack.values())  # the GEMM rate on the model's own shapes: the faster of the two GEMM calls
    m, k, n = shapes["c_fc" if "c_fc" in shapes else "1x1 conv"]
    mlp = {d: 2 * m * k * n / best[f"gemm {d} mlp"] for d in ("fp32", "bf16")}
    noise = {k: round(med[k] / best[k], 3) for k in ("fp32", "bf16", "bf16 round three", *(f"gemm {c} stack" for c in calls))}
    for label, stat in (("best", best), ("median", med)):
        ips = {k: batch / stat[k] for k in ("fp32", "bf16", "bf16 round three")}
        row("model", f"{name} bs={batch} bf16 vs fp32 ({label})", ips["bf16"], ips["fp32"], "ours fp32", "img/s", None,
            f"round three's bf16 path {ips['bf16 round three']:.1f} img/s ({ips['bf16'] / ips['bf16 round three']:.2f}x); "
            f"min cosine to fp32 {cos:.5f} (round three {cos_old:.5f})")
    share = {k: batch / best[k] * flops / rate for k in ("bf16", "bf16 round three")}
    med_rate = max(stack_flops / med[f"gemm {k} stack"] for k in calls)
    med_share = {k: batch / med[k] * flops / med_rate for k in ("bf16", "bf16 round three")}

    def paired(gemm_flops: float, gemm_keys: list[str]) -> float:
        """The median over reps of the model's rate over the GEMM's rate in the same rep: the contenders alternate
        rep by rep, so a burst or a slump of the machine that spans a rep's pair divides out."""
        return statistics.median(batch * flops / tm / max(gemm_flops / t[g][i] for g in gemm_keys)
                                 for i, tm in enumerate(t["bf16"]))

    pair = {"stack": paired(stack_flops, [f"gemm {c} stack" for c in calls]), "mlp": paired(2 * m * k * n, ["gemm bf16 mlp"])}
    row("model", f"{name} bf16 share of the bf16 GEMM rate (model's shapes)", 100 * share["bf16"], None, "-", "%", None,
        f"medians: {100 * med_share['bf16']:.0f}%, paired rep by rep: {100 * pair['stack']:.0f}% "
        f"(round three's path {100 * med_share['bf16 round three']:.0f}%); "
        f"{flops / 1e9:.2f} GFLOP/img; the model's GEMMs alone ({blocks} x {', '.join(shapes)}) run "
        f"{rate / 1e9:.0f} GFLOP/s ({', '.join(f'{STACK_NAMES[c]} {v / 1e9:.0f}' for c, v in stack.items())}); "
        f"round three's path {100 * share['bf16 round three']:.0f}%; MLP GEMM alone bf16 {mlp['bf16'] / 1e9:.0f}, fp32 "
        f"{mlp['fp32'] / 1e9:.0f} ({mlp['bf16'] / mlp['fp32']:.2f}x); median/best {noise}")
    # the issue's own definition: the GEMM rate is the MLP shape's GEMM alone (looser than the stack above)
    issue = {label: batch / stat["bf16"] * flops / (2 * m * k * n / stat["gemm bf16 mlp"]) for label, stat in
             (("best", best), ("median", med))}
    row("model", f"{name} bf16 share of the MLP-shape bf16 GEMM (the issue's definition)", 100 * issue["median"],
        None, "-", "%", None, f"medians (best reps {100 * issue['best']:.0f}%, paired rep by rep {100 * pair['mlp']:.0f}%); "
        f"stricter: the stack of the model's own GEMMs above, {100 * med_share['bf16']:.0f}%")
    fp32 = {label: batch / stat["fp32"] * flops / (2 * m * k * n / stat["gemm fp32 mlp"]) for label, stat in
            (("best", best), ("median", med))}
    row("model", f"{name} fp32 share of the fp32 GEMM rate (MLP shape)", 100 * fp32["median"], None, "-", "%", None,
        f"medians (best reps {100 * fp32['best']:.0f}%); the fp32 MLP GEMM alone {mlp['fp32'] / 1e9:.0f} GFLOP/s (best); "
        "the issue's AVX2 figure (a CPU without native bf16: fp32 is its fast path)")
    ROWS[-3]["detail"] = {"gflop_per_image": flops / 1e9, "stack_gflops": {k: v / 1e9 for k, v in stack.items()},
                          "paired_share": pair,
                          "mlp_gemm_gflops": {k: v / 1e9 for k, v in mlp.items()}, "seconds": t}


def bench_profile(args):
    """torch.profiler's top ops (self CPU time) of each architecture's bf16 encode_image, as shipped."""
    from torch.profiler import ProfilerActivity, profile

    from zeroshot.models.config import build_model
    from zeroshot.models.precision import convert_weights

    for name, (oc_name, batch, quick_batch) in ARCHS.items():
        if args.archs and name not in args.archs:
            continue
        batch = quick_batch if args.quick else batch
        half = convert_weights(build_model(open_clip_model(oc_name).state_dict()).requires_grad_(False), torch.bfloat16)
        r = half.config.image_resolution
        x = torch.randn(batch, 3, r, r).bfloat16()
        with torch.inference_mode():
            half.encode_image(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(1 if name == "ViT-L/14" else 3):
                    half.encode_image(x)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        top = [(e.key, 100 * e.self_cpu_time_total / total) for e in events[:10]]
        row("profile", f"{name} bf16 bs={batch} top ops (self CPU %)", top[0][1], None, "-", "%", None,
            ", ".join(f"{k} {p:.1f}%" for k, p in top))
        ROWS[-1]["detail"] = top


# name: (width, height)s of the JPEGs made for it
DECODE_SIZES = {"500x375 (ImageNet val's typical size)": [(500, 375), (375, 500)],
                "640x480 (COCO's typical size)": [(640, 480), (480, 640)],
                "1600x1200": [(1600, 1200), (1200, 1600)], "4000x3000 (a phone photo)": [(4000, 3000), (3000, 4000)]}
NATURAL = ["matplotlib/mpl-data/sample_data/grace_hopper.jpg", "sklearn/datasets/images/china.jpg",
           "sklearn/datasets/images/flower.jpg"]


def decode_costs(paths, loaders: dict, transform, reps: int) -> dict[str, float]:
    """CPU ms an image (read + decode + transform, one thread), loaders alternating image by image; best of reps."""
    best = {k: float("inf") for k in loaders}
    for _ in range(reps):
        spent = {k: 0.0 for k in loaders}
        for p in paths:
            for k, load in loaders.items():
                t = time.thread_time()
                transform(load(p))
                spent[k] += time.thread_time() - t
        best = {k: min(best[k], 1e3 * spent[k] / len(paths)) for k in loaders}
    return best


def pixel_difference(paths, fast, exact, transform) -> tuple[float, float]:
    """Mean and max |fast - exact| of the model's input, in 8-bit levels (the normalization undone)."""
    from zeroshot.models.transforms import STD

    std = torch.tensor(STD).view(3, 1, 1) * 255
    diffs = [((transform(fast(p)) - transform(exact(p))) * std).abs() for p in paths]
    return statistics.mean(d.mean().item() for d in diffs), max(d.max().item() for d in diffs)


def bench_decode(args):
    """The decoder table: exact against fast_decode on full-size JPEGs of four sizes (made from CIFAR-10 test images
    upscaled with grain and mottling, benchmarks/balance.py: not natural photographs) and on the few natural photos
    installed packages ship; decode cost, pixel difference, and the predictions that change (random ViT-B/32 weights,
    fp32, 10 CIFAR-10 classes: small margins, so an upper bound of what trained weights show)."""
    import tempfile
    import sysconfig

    from balance import textured_jpegs
    from torchvision.datasets.folder import default_loader as exact

    from zeroshot.data.base import DraftLoader
    from zeroshot.models.transforms import image_transform

    transform, fast = image_transform(224), DraftLoader(224)
    n = 16 if args.quick else 200
    model, classifier = _decode_model()
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes in DECODE_SIZES.items():
            csv = textured_jpegs(n if shapes[0][0] < 2000 else max(8, n // 5), shapes, Path(tmp))
            paths, labels = zip(*(line.rsplit(",", 1) for line in csv.read_text().splitlines()[1:]))
            cost = decode_costs(paths, {"exact": exact, "fast": fast}, transform, 2 if args.quick else 3)
            mean_d, max_d = pixel_difference(paths, fast, exact, transform)
            changed = _changed(model, classifier, paths, fast, exact, transform)
            row("decode", f"fast_decode, {len(paths)} JPEGs {name}", cost["fast"], cost["exact"], "exact", "core-ms/img",
                None, f"decoded at {fast(paths[0]).size} from {exact(paths[0]).size}; mean |diff| {mean_d:.2f}, max "
                f"{max_d:.0f} (8-bit levels, model input); {100 * changed:.1f}% of predictions change")
    site = Path(sysconfig.get_paths()["purelib"])
    photos = [site / p for p in NATURAL if (site / p).is_file()]
    for p in photos:
        cost = decode_costs([p], {"exact": exact, "fast": fast}, transform, 5)
        mean_d, max_d = pixel_difference([p], fast, exact, transform)
        row("decode", f"fast_decode, natural photo {p.name}", cost["fast"], cost["exact"], "exact", "core-ms/img", None,
            f"decoded at {fast(p).size} from {exact(p).size}; mean |diff| {mean_d:.2f}, max {max_d:.0f}")


def _decode_model():
    from zeroshot import build_classifier
    from zeroshot.models.config import build_model
    from zeroshot.prompts.sets import load_prompt_set

    model = build_model(open_clip_model("ViT-B-32-quickgelu").state_dict()).requires_grad_(False)
    pset = load_prompt_set("cifar10")
    with torch.inference_mode():
        return model, build_classifier(model, pset.classnames, pset.templates[:4])


def _changed(model, classifier, paths, fast, exact, transform) -> float:
    preds = []
    with torch.inference_mode():
        for load in (fast, exact):
            x = torch.stack([transform(load(p)) for p in paths])
            preds.append(torch.cat([(model.encode_image(b) @ classifier).argmax(1) for b in x.split(64)]))
    return (preds[0] != preds[1]).float().mean().item()


def e2e_data(n: int, folder: Path) -> tuple[Path, Path, Path, Path]:
    """n full-size JPEGs (500x375 / 375x500, CIFAR-10 upscaled with texture: balance.py), one per class folder, as
    an ImageNet val subset with n classes; the class names (ImageNet's first n) for both tools and one template."""
    import shutil

    from balance import textured_jpegs

    csv = textured_jpegs(n, DECODE_SIZES["500x375 (ImageNet val's typical size)"], folder)
    names = json.loads((REPO / "prompts" / "imagenet.json").read_text())["classnames"][:n]
    root = folder / "imagenet-like"
    for i, line in enumerate(csv.read_text().splitlines()[1:]):
        (root / "val" / f"c{i:04d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(line.rsplit(",", 1)[0], root / "val" / f"c{i:04d}" / "image.jpg")
    (folder / "classnames.txt").write_text("\n".join(names) + "\n")
    (folder / "cb_classnames.json").write_text(json.dumps({"imagenet1k-unverified": names}))
    (folder / "cb_templates.json").write_text(json.dumps({"imagenet1k-unverified": ["a photo of a {c}."]}))
    return root, folder / "classnames.txt", folder / "cb_classnames.json", folder / "cb_templates.json"


# clip_benchmark's CLI, with its accuracy helper replaced: it calls float() on a 1-element array, which numpy 2
# refuses (TypeError), after all the work is done; the replacement computes the same top-k accuracies with torch.
CB_MAIN = """
import sys, torch
import clip_benchmark.metrics.zeroshot_classification as z
def accuracy(output, target, topk=(1,)):
    top = output.topk(max(topk), 1).indices
    hit = top == target.view(-1, 1)
    return [hit[:, :k].any(1).float().mean().item() for k in topk]
z.accuracy = accuracy
from clip_benchmark.cli import main
sys.argv[0] = "clip_benchmark"
sys.exit(main())
"""


def bench_e2e(args):
    """End to end against CLIP_benchmark with amp (its default; bf16 autocast on the CPU), same random ViT-B/32
    weights, n JPEGs of n classes with one template each (the issue's setting: 1,000 ImageNet val images, 1,000
    classes), each tool at its default loader setting: zeroshot num_workers=auto, precision=bf16, exact decode;
    CLIP_benchmark one worker per core. Wall time of the whole command (start-up included), runs alternating."""
    import subprocess
    import tempfile

    from common import save_random_checkpoint

    n = args.e2e_images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, names, cb_names, cb_templates = e2e_data(n, tmp)
        ckpt = save_random_checkpoint(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZEROSHOT_CACHE": str(tmp / "zs-cache")}
        ours = [sys.executable, "-m", "zeroshot", "eval", "dataset=imagefolder", f"dataset.root={root / 'val'}",
                f"dataset.classnames={names}", 'prompts.templates=["a photo of a {}."]', f"model.checkpoint={ckpt}",
                "model.activation=quick_gelu", f"precision={args.e2e_precision}", "progress=false", "cache=false",
                # ImageNet's names as published repeat "missile" and "sunglasses"; CLIP_benchmark runs them as they are
                "dataset.allow_duplicate_classnames=true"]
        theirs = [sys.executable, "-c", CB_MAIN, "eval", "--dataset", "imagenet1k-unverified", "--dataset_root", str(root), "--model",
                  "ViT-B-32-quickgelu", "--pretrained", str(ckpt), "--custom_classname_file", str(cb_names),
                  "--custom_template_file", str(cb_templates), "--num_workers", str(os.cpu_count()), "--quiet",
                  *(["--no_amp"] if args.e2e_precision == "fp32" else [])]
        walls: dict[str, list[float]] = {"zeroshot": [], "clip_benchmark": []}
        first = 0 if args.e2e_warmup else 1  # a warm-up round (untimed) fills the page cache and the attention choice
        for rep in range(first, 1 + args.e2e_reps):
            for name, cmd in (("zeroshot", ours + [f"results_dir={tmp / f'zs{rep}'}"]),
                              ("clip_benchmark", theirs + ["--output", str(tmp / f"cb{rep}.json")])):
                t = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
                if r.returncode:
                    raise RuntimeError(f"{name}: {r.stderr[-3000:]}")
                if rep:
                    walls[name].append(time.perf_counter() - t)
        metrics = json.loads(sorted((tmp / f"zs{rep}").rglob("metrics.json"))[-1].read_text())
        cb = json.loads((tmp / f"cb{rep}.json").read_text())["metrics"]
    zs, cbw = statistics.median(walls["zeroshot"]), statistics.median(walls["clip_benchmark"])
    theirs_name = "CLIP_bench fp32" if args.e2e_precision == "fp32" else "CLIP_bench amp"
    row("e2e", f"end to end, {n} full-size JPEGs, {n} classes x 1 template, ViT-B/32 {args.e2e_precision}", zs, cbw,
        theirs_name, "s",
        None, f"CLIP_benchmark / zeroshot {cbw / zs:.2f}x; walls zeroshot {[round(w, 1) for w in walls['zeroshot']]}, "
        f"CLIP_benchmark {[round(w, 1) for w in walls['clip_benchmark']]}; zeroshot image step at "
        f"{100 * (metrics.get('image_step_share_of_bound') or 0):.0f}% of its bound (decode "
        f"{metrics.get('decode_core_ms_per_image')} core-ms, model {metrics.get('model_core_ms_per_image')} core-ms an "
        f"image); top-1 zeroshot {metrics.get('top1')}, CLIP_benchmark {cb.get('acc1')} (random weights)")
    ROWS[-1]["detail"] = {"walls": walls, "zeroshot_metrics": {k: metrics.get(k) for k in (
        "decode_core_ms_per_image", "model_core_ms_per_image", "image_step_bound_images_per_s",
        "image_step_share_of_bound", "loader_thumbnails", "wall_seconds", "top1")}, "clip_benchmark_metrics": cb}


# One compile probe, run in a fresh process so that the FX graph cache it finds is the one given: bf16 ViT-B/32 as
# shipped, torch.compile(visual) with Inductor's freezing (weights prepacked, BatchNorm/bias folding), the compiled
# and the eager model then alternating rep by rep. Prints one JSON line.
COMPILE_PROBE = """
import json, os, statistics, sys, time
import torch
sys.path.insert(0, os.environ["BENCH_DIR"])
import torch._inductor.config as inductor
from common import open_clip_model
from zeroshot.cli import keep_freed_memory
from zeroshot.models.config import build_model
from zeroshot.models.precision import convert_weights

keep_freed_memory()
inductor.freezing = True
mode, batch, reps = os.environ["MODE"], int(os.environ["BATCH"]), int(os.environ["REPS"])
model = convert_weights(build_model(open_clip_model("ViT-B-32-quickgelu").state_dict()), torch.bfloat16).eval()
x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).bfloat16()
with torch.inference_mode():
    eager = model.visual(x).float()
    compiled = torch.compile(model.visual, mode=None if mode == "default" else mode, dynamic=False)
    t = time.perf_counter()
    cos = torch.nn.functional.cosine_similarity(compiled(x).float(), eager).min().item()
    first = time.perf_counter() - t
    times = {"eager": [], "compiled": []}
    for _ in range(reps):
        for name, f in (("eager", model.visual), ("compiled", compiled)):
            t = time.perf_counter()
            f(x)
            times[name].append(time.perf_counter() - t)
print(json.dumps({"first_call_s": first, "min_cosine": cos, "times": times}))
"""


def bench_compile(args):
    """torch.compile against the eager bf16 model as shipped: the compile (cold, and again with Inductor's FX graph
    cache warm) and the images a second afterwards; where it pays, the images at which it breaks even."""
    import subprocess
    import tempfile

    batch, reps = (16, 2) if args.quick else (64, args.reps)
    with tempfile.TemporaryDirectory() as cache:
        for mode, run in (("default", "cold"), ("default", "warm cache"), ("max-autotune", "cold")):
            env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_DIR": str(Path(__file__).parent), "MODE": mode,
                   "BATCH": str(batch), "REPS": str(reps), "TORCHINDUCTOR_CACHE_DIR": f"{cache}/{mode}",
                   "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"}
            r = subprocess.run([sys.executable, "-c", COMPILE_PROBE], capture_output=True, text=True, env=env)
            if r.returncode:
                raise RuntimeError(f"compile probe ({mode}, {run}): {r.stderr[-3000:]}")
            out = json.loads(r.stdout.strip().splitlines()[-1])
            med = {k: statistics.median(v) for k, v in out["times"].items()}
            best = {k: min(v) for k, v in out["times"].items()}
            saved = med["eager"] - med["compiled"]  # seconds a batch
            even = f"breaks even after {batch * out['first_call_s'] / saved:,.0f} images" if saved > 0 else "never breaks even"
            row("compile", f"ViT-B/32 bf16 bs={batch} compile={mode} ({run})", batch / med["compiled"],
                batch / med["eager"], "eager", "img/s", None,
                f"medians; best {batch / best['compiled']:.1f} vs {batch / best['eager']:.1f} img/s; compile and first "
                f"call {out['first_call_s']:.1f} s; {even}; min cosine to eager {out['min_cosine']:.5f}")
            ROWS[-1]["detail"] = out


SECTIONS = {"model": bench_model, "profile": bench_profile, "decode": bench_decode, "e2e": bench_e2e,
            "compile": bench_compile}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", help=f"sections (default: all): {', '.join(SECTIONS)}")
    p.add_argument("--archs", nargs="*", help=f"architectures (default: all): {', '.join(ARCHS)}")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--e2e-images", type=int, default=1000, help="images (and classes) of the end-to-end section")
    p.add_argument("--e2e-reps", type=int, default=2, help="timed rounds of the end-to-end section")
    p.add_argument("--e2e-warmup", type=int, default=1, help="1: one untimed round of each tool first")
    p.add_argument("--e2e-precision", choices=("bf16", "fp32"), default="bf16",
                   help="zeroshot's precision; fp32 runs CLIP_benchmark with --no_amp (a CPU without native bf16)")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "latest_round4.json")
    args = p.parse_args()
    if args.quick:
        args.reps, args.e2e_images, args.e2e_reps = min(args.reps, 2), min(args.e2e_images, 100), 1
    from run import cpu_flags
    from zeroshot.cli import keep_freed_memory
    from zeroshot.files import atomic_write

    keep_freed_memory()  # as the CLI's process does: the models' activations reuse their pages

    header = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "cpu": _cpu_model(), "cpu_flags": cpu_flags(), "load_average_at_start": os.getloadavg(), "args": vars(args)}
    print(json.dumps(header, default=str), flush=True)
    start = time.perf_counter()
    for name in args.only or SECTIONS:
        SECTIONS[name](args)
        header.update(load_average_at_end=os.getloadavg(), seconds=time.perf_counter() - start)
        with atomic_write(args.json, "w") as f:  # after every section: a failure later keeps what was measured
            json.dump({"header": header, "rows": ROWS}, f, indent=1, default=str)
    print(f"wrote {args.json} after {header['seconds']:.0f} s")


def _cpu_model() -> str:
    from zeroshot.models.tuning import cpu_model

    return cpu_model()


if __name__ == "__main__":
    main()
