"""Issue 22 (round three): bf16 against fp32 in one process, per architecture, next to the GEMM rate on the
model's own MLP shape measured in the same run, and against open_clip under torch.autocast("cpu", bfloat16).

For each of ViT-B/32, RN50, ViT-B/16 and ViT-L/14 (random open_clip `*-quickgelu` weights loaded into zeroshot):
fp32 and bf16 encode_image img/s, the ratio, the FLOPs an image (counted by torch's FlopCounterMode on our own
forward, so the last block's class-token-only work is what is counted), the share of the bf16 GEMM rate that
reaches, the min cosine to fp32 and the share of predictions that change on CIFAR-10 test images (both towers
in bf16 against both in fp32). Where the CPU has no native bf16, zeroshot refuses precision=bf16 on the CPU;
the measurements here convert the weights directly, to record what that refusal avoids."""
from __future__ import annotations

import copy
import time

import torch

from common import SHARED, imagenet_prompts, interleaved, open_clip_model, rel, row

# name: (open_clip name, batch, quick batch)
ARCHS = {"ViT-B/32": ("ViT-B-32-quickgelu", 64, 16), "RN50": ("RN50-quickgelu", 32, 8),
         "ViT-B/16": ("ViT-B-16-quickgelu", 16, 4), "ViT-L/14": ("ViT-L-14-quickgelu", 8, 2)}


def _bf16(model):
    from zeroshot.models.precision import convert_weights

    return convert_weights(copy.deepcopy(model), torch.bfloat16)


def gemm_rate(m: int, k: int, n: int, dtype, reps: int = 5) -> float:
    """FLOP/s of F.linear (x [m, k], weight [n, k], bias) in `dtype`: the call the model's MLP makes."""
    x, w, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype), torch.randn(n).to(dtype)
    with torch.inference_mode():
        t = interleaved({"g": lambda: torch.nn.functional.linear(x, w, b)}, reps)["g"]
    return 2 * m * k * n / t


def flops_per_image(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_image(x)
    return counter.get_total_flops() / len(x)


def cifar_images(n: int, resolution: int):
    """n CIFAR-10 test images spread over the classes, through the eval's transform, and their class names."""
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset
    from zeroshot.models.transforms import image_transform
    from zeroshot.prompts.sets import load_prompt_set

    root = SHARED / "data" / "cifar10-test"
    if not root.is_dir():
        return None, None
    ds = build_dataset(OmegaConf.create({"name": "imagefolder", "kind": "imagefolder", "root": str(root), "split": "test"}),
                       image_transform(resolution))
    images = torch.stack([ds[i * (len(ds) // n)][0] for i in range(n)])
    return images, load_prompt_set("cifar10")


def changed_predictions(ours, half, images, pset) -> float | None:
    """Share of argmax predictions that differ between the all-fp32 and the all-bf16 model."""
    from zeroshot import build_classifier

    if images is None:
        return None
    templates = pset.templates[:4]
    with torch.inference_mode():
        p32 = (torch.nn.functional.normalize(ours.encode_image(images), dim=-1)
               @ build_classifier(ours, pset.classnames, templates)).argmax(1)
        p16 = (torch.nn.functional.normalize(half.encode_image(images).float(), dim=-1)
               @ build_classifier(half, pset.classnames, templates).float()).argmax(1)
    return (p32 != p16).float().mean().item()


def bench_bf16(args):
    from zeroshot.models.config import build_model

    reps = max(2, args.reps // 2)
    for name, (oc_name, batch, quick_batch) in ARCHS.items():
        batch = quick_batch if args.quick else batch
        ref = open_clip_model(oc_name)
        ours = build_model(ref.state_dict()).requires_grad_(False)
        half = _bf16(ours)
        c = ours.config
        torch.manual_seed(0)
        x = torch.randn(batch, 3, c.image_resolution, c.image_resolution)
        with torch.inference_mode():
            a32, a16 = ours.encode_image(x), half.encode_image(x).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                r16 = ref.encode_image(x[:2]).float()
        cos = torch.nn.functional.cosine_similarity(a32, a16).min().item()
        images, pset = cifar_images(32 if args.quick or name in ("ViT-B/16", "ViT-L/14") else 128, c.image_resolution)
        changed = changed_predictions(ours, half, images, pset)

        def autocast_ref(images):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ref.encode_image(images)

        t = interleaved({"fp32": lambda: ours.encode_image(x), "bf16": lambda: half.encode_image(x)}, reps)
        # open_clip's MultiheadAttention under CPU autocast runs its in_proj as a bmm that copies the weight once per
        # token (74% of its ViT-B/16 time, profiled), minutes a batch for ViT-L/14: its rows use 2 images, one call
        few = x if name in ("ViT-B/32", "RN50") else x[:2]
        t_few = t if few is x else interleaved({"bf16": lambda: half.encode_image(few)}, 1)
        t_oc = interleaved({"oc": lambda: autocast_ref(few)}, reps if few is x else 1)["oc"]
        flops = flops_per_image(ours, x[:2])
        if c.is_vit:  # the MLP's first GEMM on this batch: [batch * tokens, width] x [width, 4 width]
            tokens = (c.image_resolution // c.vision_patch_size) ** 2 + 1
            shape = (batch * tokens, c.vision_width, round(c.vision_width * c.vision_mlp_ratio))
        else:  # the ResNet has no MLP; its biggest 1x1 convolutions are GEMMs of about this shape
            shape = (batch * 49, 2048, 512)
        g32, g16 = gemm_rate(*shape, torch.float32), gemm_rate(*shape, torch.bfloat16)
        share = batch / t["bf16"] * flops / g16
        flips = "" if changed is None else f"; {100 * changed:.1f}% of {len(images)} CIFAR-10 predictions change"
        row("bf16", f"{name} encode_image bs={batch} bf16 vs fp32", batch / t["bf16"], batch / t["fp32"], "ours fp32", "img/s",
            None, f"min cosine to fp32 {cos:.5f}{flips}")
        row("bf16", f"{name} bf16 share of the bf16 GEMM rate", 100 * share, None, "-", "%", None,
            f"{flops / 1e9:.2f} GFLOP/img; GEMM {'x'.join(map(str, shape))}: bf16 {g16 / 1e9:.0f} GFLOP/s, fp32 "
            f"{g32 / 1e9:.0f} ({g16 / g32:.2f}x); fp32 model at {100 * batch / t['fp32'] * flops / g32:.0f}% of fp32 GEMM")
        row("bf16", f"{name} bf16 vs open_clip autocast(bf16), {len(few)} images", len(few) / t_few["bf16"], len(few) / t_oc,
            "oc autocast", "img/s", rel(a16[:2], r16))
        del ref, ours, half

    ref = open_clip_model("ViT-B-32-quickgelu")
    ours = build_model(ref.state_dict()).requires_grad_(False)
    bench_classifier(args, ours, _bf16(ours))
    bench_bf16_eval(args, ours, _bf16(ours))


def bench_classifier(args, ours, half):
    from zeroshot import build_classifier

    classes, templates = imagenet_prompts(4 if args.quick else 20)
    n = len(classes) * len(templates)
    out = {}
    with torch.inference_mode():
        for key, model in (("fp32", ours), ("bf16", half)):
            build_classifier(model, classes[:1], templates[:4])  # warm-up
            t0 = time.perf_counter()
            w = build_classifier(model, classes, templates)
            out[key] = (time.perf_counter() - t0, w)
    cos = torch.nn.functional.cosine_similarity(out["fp32"][1].t(), out["bf16"][1].float().t()).min().item()
    row("bf16", f"build_classifier {len(classes)} classes x {len(templates)} templates, bf16 vs fp32", n / out["bf16"][0],
        n / out["fp32"][0], "ours fp32", "prompts/s", None, f"min cosine to fp32 {cos:.5f}")


def bench_bf16_eval(args, ours, half):
    """The eval's image step on real CIFAR-10 JPEGs in both precisions: speed, cosine, changed predictions."""
    from omegaconf import OmegaConf

    from zeroshot import build_classifier
    from zeroshot.data.readers import build_dataset
    from zeroshot.features.extract import Encoding, extract_features
    from zeroshot.models.transforms import image_transform
    from zeroshot.prompts.sets import load_prompt_set

    root = SHARED / "data" / "cifar10-test"
    if not root.is_dir():
        print("bf16 eval: ../shared/data/cifar10-test not here; skipped")
        return
    ds = build_dataset(OmegaConf.create({"name": "imagefolder", "kind": "imagefolder", "root": str(root), "split": "test"}),
                       image_transform(224))
    n = 64 if args.quick else 512
    positions = [i * (len(ds) // n) for i in range(n)]  # spread over the classes
    pset = load_prompt_set("cifar10")
    out = {}
    with torch.inference_mode():
        for key, model in (("fp32", ours), ("bf16", half)):
            t0 = time.perf_counter()
            f = extract_features(model, ds, how=Encoding(batch_size=64, num_workers=1), positions=positions)
            secs = time.perf_counter() - t0
            w = build_classifier(model, pset.classnames, pset.templates).float()
            out[key] = (secs, f.features, (torch.nn.functional.normalize(f.features, dim=-1) @ w).argmax(1))
    cos = torch.nn.functional.cosine_similarity(out["fp32"][1], out["bf16"][1]).min().item()
    changed = (out["fp32"][2] != out["bf16"][2]).float().mean().item()
    row("bf16", f"eval image step, {n} CIFAR-10 JPEGs, ViT-B/32, bf16 vs fp32", n / out["bf16"][0], n / out["fp32"][0],
        "ours fp32", "img/s", None, f"min cosine {cos:.5f}; {100 * changed:.1f}% of predictions change")
