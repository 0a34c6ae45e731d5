"""Issue 13: bf16 against fp32 in one process, and against open_clip under torch.autocast("cpu", bfloat16).

Where the CPU has no native bf16 (no AVX512-BF16, no AMX) zeroshot refuses precision=bf16 on the CPU; the
measurements here convert the weights directly, to record what that refusal avoids."""
from __future__ import annotations

import copy
import time

import torch

from common import SHARED, imagenet_prompts, interleaved, open_clip_model, rel, row


def _bf16(model):
    from zeroshot.models.precision import convert_weights

    return convert_weights(copy.deepcopy(model), torch.bfloat16)


def matmul_rate(dtype, n=1024) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    return 2 * n**3 * 3 / (time.perf_counter() - t)


def bench_bf16(args):
    from zeroshot import build_classifier
    from zeroshot.models.config import build_model

    fp32_rate, bf16_rate = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    row("bf16", "matmul 1024x1024 bf16 vs fp32", bf16_rate / 1e9, fp32_rate / 1e9, "fp32", "GFLOP/s", None,
        f"bf16 is {bf16_rate / fp32_rate:.2f}x fp32 on this CPU")
    batch = 8 if args.quick else 16
    for name in ("ViT-B-32-quickgelu", "RN50-quickgelu"):
        ref = open_clip_model(name)
        ours = build_model(ref.state_dict()).requires_grad_(False)
        half = _bf16(ours)
        torch.manual_seed(0)
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            a32, a16 = ours.encode_image(x), half.encode_image(x).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                r16 = ref.encode_image(x).float()
        cos = torch.nn.functional.cosine_similarity(a32, a16).min().item()

        def autocast_ref():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ref.encode_image(x)

        t = interleaved({"fp32": lambda: ours.encode_image(x), "bf16": lambda: half.encode_image(x), "oc": autocast_ref},
                        max(1, args.reps // 2))
        row("bf16", f"{name} encode_image bs={batch} bf16 vs fp32", batch / t["bf16"], batch / t["fp32"], "ours fp32", "img/s",
            None, f"min cosine to fp32 {cos:.5f}")
        row("bf16", f"{name} encode_image bs={batch} bf16 vs open_clip autocast", batch / t["bf16"], batch / t["oc"],
            "oc autocast", "img/s", rel(a16, r16))

    ref = open_clip_model("ViT-B-32-quickgelu")
    ours = build_model(ref.state_dict()).requires_grad_(False)
    half = _bf16(ours)
    classes, templates = imagenet_prompts(4 if args.quick else 10)
    templates = templates[:20]
    n = len(classes) * len(templates)
    times = {}
    with torch.inference_mode():
        for key, model in (("fp32", ours), ("bf16", half)):
            t0 = time.perf_counter()
            w = build_classifier(model, classes, templates)
            times[key] = (time.perf_counter() - t0, w)
    cos = torch.nn.functional.cosine_similarity(times["fp32"][1].t(), times["bf16"][1].t()).min().item()
    row("bf16", f"build_classifier {len(classes)} classes x {len(templates)} templates, bf16 vs fp32", n / times["bf16"][0],
        n / times["fp32"][0], "ours fp32", "prompts/s", None, f"min cosine to fp32 {cos:.5f}")
    bench_bf16_eval(args, ours, half)


def bench_bf16_eval(args, ours, half):
    """The eval's image step on real CIFAR-10 JPEGs in both precisions: speed, cosine, changed predictions."""
    from omegaconf import OmegaConf

    from zeroshot import build_classifier
    from zeroshot.data.readers import build_dataset
    from zeroshot.features.extract import extract_features
    from zeroshot.prompts.sets import load_prompt_set
    from zeroshot.models.transforms import image_transform

    root = SHARED / "data" / "cifar10-test"
    if not root.is_dir():
        print("bf16 eval: ../shared/data/cifar10-test not here; skipped")
        return
    ds = build_dataset(OmegaConf.create({"name": "imagefolder", "kind": "imagefolder", "root": str(root), "split": "test"}),
                       image_transform(224))
    n = 64 if args.quick else 256
    positions = [i * (len(ds) // n) for i in range(n)]  # spread over the classes
    pset = load_prompt_set("cifar10")
    out = {}
    with torch.inference_mode():
        for key, model in (("fp32", ours), ("bf16", half)):
            t0 = time.perf_counter()
            f = extract_features(model, ds, batch_size=32, num_workers=1, positions=positions)
            secs = time.perf_counter() - t0
            w = build_classifier(model, pset.classnames, pset.templates)
            out[key] = (secs, f.features, (torch.nn.functional.normalize(f.features, dim=-1) @ w).argmax(1))
    cos = torch.nn.functional.cosine_similarity(out["fp32"][1], out["bf16"][1]).min().item()
    changed = (out["fp32"][2] != out["bf16"][2]).float().mean().item()
    row("bf16", f"eval image step, {n} CIFAR-10 JPEGs, ViT-B/32, bf16 vs fp32", n / out["bf16"][0], n / out["fp32"][0],
        "ours fp32", "img/s", None, f"min cosine {cos:.5f}; {100 * changed:.1f}% of predictions change")
