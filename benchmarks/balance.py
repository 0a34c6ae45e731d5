"""Issue 22: decoding workers and the model balanced on few cores.

For three image sizes (CIFAR-10's own 32x32 JPEGs, 224x224 JPEGs, and full-size ImageNet-like 500x375 and
375x500 JPEGs made here), the two costs measured solo: decoding (read + decode + the model's transform, one
process on one core, `time.thread_time`) and the model (bf16 ViT-B/32 encode_image on pre-decoded tensors with
every core, core-ms = wall x cores). Their bound, cores / (decode + model core-seconds per image), is what the
cores allow if they did nothing else; the rows give the image step (wait for data + encode_image, from
metrics.json) of a bf16 eval under the old policy (cores - 1 workers at normal priority, torch's default
threads) and the new `num_workers=auto` (one idle-priority worker per core, all cores to the model), and each
one's share of the bound.

Not a test: nothing here asserts about time. There is no ImageNet on this machine, so the larger images are
CIFAR-10 test images upscaled (bicubic) with texture added so that they compress like photographs rather than
like smooth upscales: Gaussian grain (sigma 18) plus bicubic-upsampled coarse noise (mottling), JPEG quality 90.
That gives about 100 KB per 500x375 file, near ImageNet's validation average (~110 KB)."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import SHARED, row, run_eval, save_random_checkpoint, subset_csv

SIZES = {"cifar10 32x32": None, "224x224": [(224, 224)], "full-size 500x375/375x500": [(500, 375), (375, 500)]}


def textured_jpegs(n: int, shapes: list[tuple[int, int]], folder: Path, seed: int = 0) -> Path:
    """n JPEGs (quality 90) of the given (width, height)s in turn, from CIFAR-10 test images upscaled with grain
    and mottling added (see the module docstring); a CSV of them, labelled by their CIFAR-10 class."""
    from PIL import Image

    src = subset_csv(n, folder).read_text().splitlines()[1:]
    rng = np.random.default_rng(seed)
    out = folder / f"jpeg_{shapes[0][0]}x{shapes[0][1]}"
    out.mkdir(exist_ok=True)
    lines = ["path,label"]
    for i, line in enumerate(src):
        path, label = line.rsplit(",", 1)
        w, h = shapes[i % len(shapes)]
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
        grain = rng.normal(0, 18, (h, w, 3))
        coarse = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
        mottle = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32) - 128
        pixels = np.clip(a + grain + 0.15 * mottle, 0, 255).astype(np.uint8)
        target = out / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(target, "JPEG", quality=90)
        lines.append(f"{target},{label}")
    csv = folder / f"{out.name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def csv_dataset(csv: Path, transform):
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "dataset" / "csv.yaml")
    cfg.path = str(csv)
    ds = build_dataset(cfg)
    ds.transform = transform
    return ds


def solo_decode_ms(ds, n: int) -> float:
    """Core-ms per image of read + decode + transform, sequentially in this process on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds[0]  # warm: imports, file cache
        start = time.thread_time()
        for i in range(n):
            ds[i % len(ds)]
        return 1000 * (time.thread_time() - start) / n
    finally:
        torch.set_num_threads(threads)


def solo_model_ms(model, images: torch.Tensor, reps: int) -> float:
    """Core-ms per image of encode_image on pre-decoded tensors with every core: wall x cores, over `reps` calls
    after a warm-up (their total, as the eval's own encode time is a total)."""
    from zeroshot.data.base import available_cores

    cores = available_cores()
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        with torch.inference_mode():
            model.encode_image(images)  # warm-up
            t = time.perf_counter()
            for _ in range(reps):
                model.encode_image(images)
            wall = time.perf_counter() - t
        return 1000 * wall * cores / (reps * len(images))
    finally:
        torch.set_num_threads(threads)


POLICIES = {"old": lambda cores: [f"num_workers={max(1, cores - 1)}", "worker_priority=normal"], "auto": lambda cores: []}


def balance_rows(label: str, csv: Path, ckpt: Path, tmp: Path, args, extra=()) -> dict:
    """One image size: per round, the solo costs and their bound, then each policy's image step, so the
    machine's drift (it is shared) hits the bound and the rates alike; rows give the medians over rounds."""
    from zeroshot.data.base import available_cores
    from zeroshot.models.loader import load_model

    cores = available_cores()
    model = load_model(str(ckpt), "cpu", "bf16")
    ds = csv_dataset(csv, model.transform)
    n_decode = min(len(ds), 300)
    batch = torch.stack([ds[i][0] for i in range(64)])
    rounds = 1 if args.quick else max(1, min(3, args.reps))
    costs: dict[str, list[float]] = {"decode": [], "model": [], "bound": []}
    rates: dict[str, list[float]] = {k: [] for k in POLICIES}
    shares: dict[str, list[float]] = {k: [] for k in POLICIES}
    runs: dict[str, dict] = {}
    for r in range(rounds):
        decode, model_ms = solo_decode_ms(ds, n_decode), solo_model_ms(model, batch, 6)
        bound = 1000 * cores / (decode + model_ms)
        for k, v in zip(costs, (decode, model_ms, bound)):
            costs[k].append(v)
        for name, policy in POLICIES.items():
            m = run_eval(csv, ckpt, tmp / f"{label[:5]}_{name}_{r}", "cache=false", "precision=bf16", "batch_size=64",
                         *policy(cores), *extra)
            rates[name].append(m["image_step_images_per_s"])
            shares[name].append(m["image_step_images_per_s"] / bound)
            runs[name] = m
    med = {k: statistics.median(v) for k, v in costs.items()}
    row("balance", f"{label}: solo decode", med["decode"], None, "-", "core-ms", None,
        f"one core, {n_decode} images in turn; rounds {', '.join(f'{x:.2f}' for x in costs['decode'])}")
    row("balance", f"{label}: solo model (bf16 ViT-B/32, bs 64)", med["model"], None, "-", "core-ms", None,
        f"wall x {cores} cores on pre-decoded tensors; rounds {', '.join(f'{x:.1f}' for x in costs['model'])}")
    row("balance", f"{label}: bound = cores / (decode + model)", med["bound"], None, "-", "img/s")
    out = {**med}
    for name in POLICIES:
        m, rate, share = runs[name], statistics.median(rates[name]), statistics.median(shares[name])
        out[name], out[f"{name}_share"] = rate, share
        row("balance", f"{label}: image step, {name} policy", rate, med["bound"], "bound", "img/s", None,
            f"median share of each round's bound {100 * share:.1f}%; {m['decode_workers']} workers "
            f"({m['decode_scheduler']}), {m['model_threads']} threads; in the run: decode {m['decode_core_ms_per_image']:.2f}, "
            f"model {m['model_core_ms_per_image']:.1f} core-ms/img; rounds {', '.join(f'{x:.1f}' for x in rates[name])}")
    return out


def bench_balance(args, only: tuple[str, ...] = ()):
    n = 256 if args.quick else 768
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not (SHARED / "data" / "cifar10-test").is_dir():
            raise SystemExit(f"{SHARED / 'data' / 'cifar10-test'} is needed for this section")
        ckpt = save_random_checkpoint(tmp)
        for label, shapes in SIZES.items():
            if only and label not in only:
                continue
            csv = subset_csv(n, tmp) if shapes is None else textured_jpegs(n, shapes, tmp)
            balance_rows(label, csv, ckpt, tmp, args)
