"""Issue 13: the fixed cost of a command. --help, a repeat prompt experiment on cached features, and reading
OpenAI's archive without TorchScript."""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, open_clip_model, row, subset_csv


def wall(cmd: list[str], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        times.append(time.perf_counter() - t)
        if r.returncode not in (0,):
            raise RuntimeError(r.stderr[-2000:])
    return statistics.median(times)


def bench_startup(args):
    reps = 3 if args.quick else 5
    zs = [sys.executable, "-m", "zeroshot"]
    row("start", "zeroshot --help", wall([*zs, "--help"], reps), None, "-", "s", None, "target < 1.5 s")
    row("start", "zeroshot eval --help", wall([*zs, "eval", "--help"], reps), None, "-", "s", None, "target < 1.5 s")
    row("start", "python -c 'import torch' (the floor)", wall([sys.executable, "-c", "import torch"], reps), None, "-", "s")
    row("start", "python -c 'import torchvision'", wall([sys.executable, "-c", "import torchvision"], reps), None, "-", "s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "vitb32.pt"
        torch.save(open_clip_model("ViT-B-32-quickgelu").state_dict(), ckpt)
        csv = subset_csv(200, tmp)
        cmd = [*zs, "prompts", "dataset=csv", f"dataset.path={csv}", f"model.checkpoint={ckpt}", f"cache_dir={tmp / 'c'}",
               f"results_dir={tmp / 'r'}", "progress=false", "bootstrap=200"]
        first = wall(cmd, 1)
        again = wall([*cmd, 'prompts.templates=["a photo of the {}.","a low resolution photo of a {}."]'], reps)
        row("start", "repeat prompt experiment, 200 cached images, ViT-B/32", again, None, "-", "s", None,
            f"target < 3 s; the first run (encoding the images) took {first:.1f} s")
        bench_archive(tmp)


def bench_archive(tmp: Path):
    """OpenAI's TorchScript archive: zeroshot's restricted unpickler against torch.jit.load."""
    sys.path.insert(0, str(REPO / "tests"))
    import warnings

    from conftest import save_openai_archive

    from zeroshot.models.config import build_model
    from zeroshot.models.checkpoint import read_torchscript

    model = build_model(open_clip_model("ViT-B-32-quickgelu").state_dict())
    path = save_openai_archive(model, tmp / "ViT-B-32.pt")
    t0 = time.perf_counter()
    ours = read_torchscript(path)
    t_ours = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        ref = torch.jit.load(str(path), map_location="cpu").state_dict()
        t_jit = time.perf_counter() - t0
    same = all(torch.equal(ours[k], ref[k]) for k in ref)
    row("start", "read OpenAI's ViT-B/32 archive (no TorchScript) vs torch.jit.load", 1 / t_ours, 1 / t_jit, "jit.load",
        "loads/s", 0.0 if same else None, f"{t_ours:.2f} s vs {t_jit:.2f} s; identical tensors: {same}")
