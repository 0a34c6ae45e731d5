"""Shared pieces of the benchmark sections: the result table, timing, and reference models."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZEROSHOT_SHARED") or REPO.parent / "shared")  # a worktree elsewhere: ZEROSHOT_SHARED=/work/shared
sys.path.insert(0, str(REPO))

ROWS: list[dict] = []
def row(section, what, ours, ref, ref_name, unit, diff=None, note=""):
    ROWS.append(dict(section=section, what=what, zeroshot=ours, reference=ref, ref_name=ref_name,
                     ratio=(ours / ref if ref else None), unit=unit, max_rel_diff=diff, note=note))
    ratio = f"{ours / ref:5.2f}x" if ref else "   - "
    d = f"{diff:.1e}" if diff is not None else "-"
    print(f"{section:7s} {what:42s} zeroshot {ours:9.2f} {unit:9s} {ref_name:10s} {ref if ref else float('nan'):9.2f}  "
          f"ratio {ratio}  max rel diff {d}  {note}", flush=True)


def save_rows(path: str | None) -> None:
    """The rows printed so far, as JSON (--json FILE); nothing without a path."""
    if path:
        with open(path, "w") as f:
            json.dump(ROWS, f, indent=1)


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


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = min(timed(lambda: a @ b, 8))
    return 2 * 2048**3 / t


def imagenet_prompts(n_classes: int):
    data = json.loads((REPO / "prompts" / "imagenet.json").read_text())
    step = len(data["classnames"]) // n_classes  # spread over the label space, not just fish
    return data["classnames"][::step][:n_classes], data["templates"]


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


def tiny_checkpoint(folder: Path) -> Path:
    from zeroshot.models.clip import CLIP, CLIPConfig

    path = folder / "tiny224.pt"
    torch.manual_seed(0)
    cfg = CLIPConfig(embed_dim=64, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=32,
                     transformer_width=64, transformer_heads=1, transformer_layers=1)
    torch.save(CLIP(cfg).state_dict(), path)
    return path


def classifier_side_by_side(ref, ours, tokenizer, classes, templates) -> tuple[float, float, float, float]:
    """build_classifier against open_clip's build_zero_shot_classifier on the same prompts, once each:
    (our prompts/s, open_clip's prompts/s, max relative difference, min cosine)."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    from zeroshot import build_classifier

    n = len(classes) * len(templates)
    with torch.inference_mode():
        t0 = time.perf_counter()
        w_ref = build_zero_shot_classifier(ref, tokenizer, classes, templates, num_classes_per_batch=2)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        w_ours = build_classifier(ours, classes, templates)
        t_ours = time.perf_counter() - t0
    cos = torch.nn.functional.cosine_similarity(w_ref.t(), w_ours.t(), dim=-1).min().item()
    return n / t_ours, n / t_ref, rel(w_ours, w_ref), cos
