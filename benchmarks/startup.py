"""Issues 13 and 22: the fixed cost of a command. --help, a repeat prompt experiment on cached features (and
where its time goes: imports by package from `-X importtime`, a cProfile of the command), and reading OpenAI's
archive without TorchScript."""
from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
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
        quiet = wall([*cmd, "figures=false", 'prompts.templates=["a photo of the {}.","a low resolution photo of a {}."]'], reps)
        row("start", "the same, figures=false (no matplotlib)", quiet, None, "-", "s", None, "templates.png, selection.png not drawn")
        profile_repeat(cmd, tmp, again)
        bench_archive(tmp)


IMPORT_GROUPS = ("torch", "torchvision", "hydra", "omegaconf", "pandas", "matplotlib", "zeroshot")


def import_times(stderr: str) -> dict[str, float]:
    """Seconds of `-X importtime` per top-level package (imports made at the top of the tree: a package's
    cumulative time holds what it imports), the rest pooled as "other"; "total" is their sum."""
    out: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m:  # depth 0: no indentation before the name
            root = m.group(2).split(".")[0]
            out[root if root in IMPORT_GROUPS else "other"] += int(m.group(1)) / 1e6
    out["total"] = sum(out.values())
    return out


def profile_repeat(cmd: list[str], tmp: Path, wall_s: float, top: int = 25) -> None:
    """Where a repeat run's time goes: its imports by package, and a cProfile of the whole command (another new
    pair of templates each time, so the text encoding of new prompts is in it, as in the timed runs' first)."""
    import pstats

    def fresh(i: int) -> list[str]:
        return [*cmd, f'prompts.templates=["a sketch of the {{}}. ({i})","a photo of my {{}}. ({i})"]']

    r = subprocess.run([cmd[0], "-X", "importtime", *fresh(1)[1:]], capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    t = import_times(r.stderr)
    parts = ", ".join(f"{k} {t[k]:.2f} s" if t.get(k) else f"{k} absent" for k in (*IMPORT_GROUPS, "other"))
    print(f"start   repeat run's imports (-X importtime, top-level by package; total {t['total']:.2f} s of the "
          f"{wall_s:.2f} s median wall): {parts}", flush=True)
    for k in ("torch", "torchvision", "hydra", "pandas", "matplotlib"):
        row("start", f"repeat run: import {k}", t.get(k, 0.0), None, "-", "s", None,
            "absent" if not t.get(k) else "-X importtime, cumulative")
    stats = tmp / "repeat.prof"
    r = subprocess.run([cmd[0], "-m", "cProfile", "-o", str(stats), *fresh(2)[1:]], capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    st = pstats.Stats(str(stats))
    entries = [(v[3], v[1], k) for k, v in st.stats.items()]  # (cumulative s, calls, (file, line, function))
    wanted = re.compile(r"zeroshot/|hydra/(main|_internal/hydra)\.py|matplotlib/pyplot\.py|pandas/__init__|"
                        r"torch/__init__|torch/serialization\.py|omegaconf/omegaconf\.py")
    shown = [e for e in sorted(entries, reverse=True) if wanted.search(e[2][0])][:top]
    print(f"start   cProfile of the repeat run ({st.total_tt:.2f} s under the profiler), top {top} cumulative:")
    for cum, calls, (file, line, fn) in shown:
        where = file.split("site-packages/")[-1] if "site-packages/" in file else file[file.rfind("zeroshot/"):]
        print(f"          {cum:6.2f} s  {calls:>6}  {where}:{line}({fn})", flush=True)


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
