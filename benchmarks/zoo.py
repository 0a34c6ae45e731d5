"""Issue 11: the model zoo at speed. open_clip GELU ViT-B-16 and ViT-H-14 (80-dim heads), same random weights
loaded into zeroshot from open_clip's state dict, text (build_classifier) and image side by side."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from common import imagenet_prompts, interleaved, open_clip_model, rel, row


def _pair(name: str):
    from zeroshot.pretrained import load_model

    ref = open_clip_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        torch.save(ref.state_dict(), path)
        ours = load_model(path, activation="gelu")
    return ref, ours


def bench_zoo(args):
    from open_clip import get_tokenizer
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    from zeroshot import build_classifier

    for name, batch, (n_cls, n_tpl) in (("ViT-B-16", 32, (10, 80)), ("ViT-H-14", 4, (4, 20))):
        if args.quick:
            batch, n_cls, n_tpl = max(2, batch // 4), 2, 10
        ref, ours = _pair(name)
        torch.manual_seed(0)
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            a, b = ours.encode_image(x), ref.encode_image(x)
        t = interleaved({"ours": lambda: ours.encode_image(x), "open_clip": lambda: ref.encode_image(x)}, max(2, args.reps // 2))
        row("zoo", f"{name} (GELU) encode_image bs={batch}", batch / t["ours"], batch / t["open_clip"], "open_clip", "img/s", rel(a, b))
        classes, templates = imagenet_prompts(n_cls)
        templates = templates[:n_tpl]
        n = len(classes) * len(templates)
        with torch.inference_mode():
            t0 = time.perf_counter()
            w_ref = build_zero_shot_classifier(ref, get_tokenizer(name), classes, templates, num_classes_per_batch=2)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            w_ours = build_classifier(ours, classes, templates)
            t_ours = time.perf_counter() - t0
        cos = torch.nn.functional.cosine_similarity(w_ref.t(), w_ours.t(), dim=-1).min().item()
        row("zoo", f"{name} (GELU) build_classifier {len(classes)} classes x {len(templates)} templates", n / t_ours, n / t_ref,
            "open_clip", "prompts/s", rel(w_ours, w_ref), f"min cosine {cos:.7f}")
