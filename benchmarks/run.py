"""Side-by-side speed benchmark: zeroshot vs open_clip (and HF transformers), same weights, same inputs, one run.

    python benchmarks/run.py                   # everything (about 15 minutes on 2 CPU cores)
    python benchmarks/run.py --only image text # some sections: image, text, eval, memory, cache
    python benchmarks/run.py --quick           # fewer repeats and smaller inputs

Not a test: it asserts nothing about time. It prints a table of throughputs with the ratio to the
reference and the max relative output difference next to each ratio. Reference implementations are
test-only dependencies (pip install -e ".[test]"); HF transformers is used where it is installed.
Each measurement alternates the contenders and reports the median, since this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from zeroshot import build_classifier  # noqa: E402
from zeroshot.model import build_model  # noqa: E402

ROWS: list[dict] = []


def row(section, what, ours, ref, ref_name, unit, diff=None, note=""):
    ROWS.append(dict(section=section, what=what, zeroshot=ours, reference=ref, ref_name=ref_name,
                     ratio=(ours / ref if ref else None), unit=unit, max_rel_diff=diff, note=note))
    ratio = f"{ours / ref:5.2f}x" if ref else "   - "
    d = f"{diff:.1e}" if diff is not None else "-"
    print(f"{section:7s} {what:42s} zeroshot {ours:9.2f} {unit:9s} {ref_name:10s} {ref if ref else float('nan'):9.2f}  "
          f"ratio {ratio}  max rel diff {d}  {note}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each function, alternating them so that machine noise hits all alike."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            f()  # warm-up
        for _ in range(reps):
            for k, f in fns.items():
                times[k] += timed(f, 1)
    return {k: statistics.median(v) for k, v in times.items()}


def open_clip_model(name):
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model(name).eval()


def hf_vision_from_openai(sd: dict, ours) -> torch.nn.Module | None:
    """HF CLIPVisionModelWithProjection with the same ViT weights (a key mapping, no code shared)."""
    try:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    except ImportError:
        return None
    c = ours.config
    cfg = CLIPVisionConfig(hidden_size=c.vision_width, intermediate_size=4 * c.vision_width,
                           num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
                           image_size=c.image_resolution, patch_size=c.vision_patch_size,
                           projection_dim=c.embed_dim, hidden_act="quick_gelu", attn_implementation="sdpa")
    hf = CLIPVisionModelWithProjection(cfg).eval()
    w = c.vision_width
    m = {"vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
         "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
         "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
         "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
         "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"], "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
         "visual_projection.weight": sd["visual.proj"].t()}
    for i in range(c.vision_layers):
        p, q = f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        wq, wk, wv = sd[p + "attn.in_proj_weight"].split(w)
        bq, bk, bv = sd[p + "attn.in_proj_bias"].split(w)
        m.update({q + "self_attn.q_proj.weight": wq, q + "self_attn.k_proj.weight": wk, q + "self_attn.v_proj.weight": wv,
                  q + "self_attn.q_proj.bias": bq, q + "self_attn.k_proj.bias": bk, q + "self_attn.v_proj.bias": bv,
                  q + "self_attn.out_proj.weight": sd[p + "attn.out_proj.weight"], q + "self_attn.out_proj.bias": sd[p + "attn.out_proj.bias"],
                  q + "layer_norm1.weight": sd[p + "ln_1.weight"], q + "layer_norm1.bias": sd[p + "ln_1.bias"],
                  q + "layer_norm2.weight": sd[p + "ln_2.weight"], q + "layer_norm2.bias": sd[p + "ln_2.bias"],
                  q + "mlp.fc1.weight": sd[p + "mlp.c_fc.weight"], q + "mlp.fc1.bias": sd[p + "mlp.c_fc.bias"],
                  q + "mlp.fc2.weight": sd[p + "mlp.c_proj.weight"], q + "mlp.fc2.bias": sd[p + "mlp.c_proj.bias"]})
    missing, unexpected = hf.load_state_dict(m, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf


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


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = min(timed(lambda: a @ b, 8))
    return 2 * 2048**3 / t


def imagenet_prompts(n_classes: int):
    data = json.loads((REPO / "prompts" / "imagenet.json").read_text())
    step = len(data["classnames"]) // n_classes  # spread over the label space, not just fish
    return data["classnames"][::step][:n_classes], data["templates"]


def bench_text(args):
    from open_clip import get_tokenizer
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    ref = open_clip_model("ViT-B-32-quickgelu")
    ours = build_model(ref.state_dict()).requires_grad_(False)
    classes, templates = imagenet_prompts(4 if args.quick else 10)
    n = len(classes) * len(templates)
    with torch.inference_mode():
        t0 = time.perf_counter()
        w_ref = build_zero_shot_classifier(ref, get_tokenizer("ViT-B-32"), classes, templates, num_classes_per_batch=2)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        w_ours = build_classifier(ours, classes, templates)
        t_ours = time.perf_counter() - t0
    cos = torch.nn.functional.cosine_similarity(w_ref.t(), w_ours.t(), dim=-1).min().item()
    row("text", f"build_classifier {len(classes)} ImageNet classes x {len(templates)} templates", n / t_ours, n / t_ref,
        "open_clip", "prompts/s", rel(w_ours, w_ref), f"min cosine {cos:.7f}")
    # with repeats: several prompt sets share templates and classes, so prompts repeat across runs
    with torch.inference_mode():
        plain = lambda: ours.encode_text(__import__("zeroshot").tokenize(["a photo of a dog."] * 256))  # noqa: E731
        t = interleaved({"plain": plain}, 2)["plain"]
    row("text", "encode_text of one short prompt x256 (no dedupe)", 256 / t, None, "-", "prompts/s")


def subset_csv(n: int, folder: Path) -> Path:
    root = SHARED / "data" / "cifar10-test"
    if not root.is_dir():
        raise SystemExit(f"{root} is needed for this section")
    classes = sorted(p.name for p in root.iterdir())
    per = -(-n // len(classes))
    lines = ["path,label"] + [f"{root / c / f'{i:04d}.jpg'},{c}" for c in classes for i in range(per)][: n]
    path = folder / f"cifar10_{n}.csv"
    path.write_text("\n".join(lines[: n + 1]) + "\n")
    return path


def save_random_checkpoint(folder: Path, name="ViT-B-32-quickgelu") -> Path:
    path = folder / "vit_b32_random.pt"
    if not path.exists():
        torch.save(open_clip_model(name).state_dict(), path)
    return path


def run_eval(csv: Path, ckpt: Path, out: Path, *extra) -> dict:
    cmd = [sys.executable, "-m", "zeroshot", "eval", "dataset=csv", f"dataset.path={csv}", f"model.checkpoint={ckpt}",
           f"results_dir={out}", f"cache_dir={out / 'cache'}", "progress=false", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = sorted(out.rglob("metrics.json"), key=os.path.getmtime)[-1]
    return {**json.loads(run.read_text()), "peak_rss_mb_children": usage.ru_maxrss / 1024}


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


def tiny_checkpoint(folder: Path) -> Path:
    from zeroshot.model import CLIP, CLIPConfig

    path = folder / "tiny224.pt"
    torch.manual_seed(0)
    cfg = CLIPConfig(embed_dim=64, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=32,
                     transformer_width=64, transformer_heads=1, transformer_layers=1)
    torch.save(CLIP(cfg).state_dict(), path)
    return path


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


SECTIONS = {"image": bench_image, "text": bench_text, "eval": bench_eval, "memory": bench_memory, "cache": bench_cache}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    if args.quick:
        args.reps = min(args.reps, 2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}")
    for name in args.only or SECTIONS:
        SECTIONS[name](args)
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
