"""Issue 11: the model zoo at speed. open_clip GELU ViT-B-16 and ViT-H-14 (80-dim heads), same random weights
loaded into zeroshot from open_clip's state dict, text (build_classifier) and image side by side."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from common import classifier_side_by_side, imagenet_prompts, interleaved, open_clip_model, rel, row


def _pair(name: str):
    from zeroshot.models.loader import load_model

    ref = open_clip_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        torch.save(ref.state_dict(), path)
        ours = load_model(path, activation="gelu")
    return ref, ours


def bench_zoo(args):
    from open_clip import get_tokenizer

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
        ours_rate, ref_rate, diff, cos = classifier_side_by_side(ref, ours, get_tokenizer(name), classes, templates)
        row("zoo", f"{name} (GELU) build_classifier {len(classes)} classes x {len(templates)} templates", ours_rate,
            ref_rate, "open_clip", "prompts/s", diff, f"min cosine {cos:.7f}")
