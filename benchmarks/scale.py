"""Issue 14: a 2-rank CPU eval (torchrun, gloo) with balanced shards against the earlier whole-chunk shards,
on a dataset whose chunk count does not divide evenly between the ranks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, row, save_random_checkpoint, subset_csv


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_shards(args):
    # 5 chunks on 2 ranks: whole chunks give one rank 3 and the other 2; ViT-B/32-sized weights, so that the
    # image step (not start-up) decides the wall time
    n, chunk = (250, 50) if args.quick else (500, 100)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv, ckpt = subset_csv(n, tmp), save_random_checkpoint(tmp)
        times = {}
        for mode in ("chunks", "balanced") * (1 if args.quick else 2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={_port()}", "-m", "zeroshot", "eval", "dataset=csv", f"dataset.path={csv}",
                   f"model.checkpoint={ckpt}", f"results_dir={tmp / mode}", "cache=false", "progress=false", "num_workers=0",
                   f"chunk_size={chunk}", "batch_size=25", f"dist_shards={mode}"]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if r.returncode:
                raise RuntimeError(r.stderr[-2000:])
            times.setdefault(mode, []).append(time.perf_counter() - t)
            m = json.loads(sorted((tmp / mode).rglob("metrics.json"), key=os.path.getmtime)[-1].read_text())
            times.setdefault(f"{mode}_encode", []).append(m["image_encode_seconds"] + m["data_wait_seconds"])
        best = {k: min(v) for k, v in times.items()}
        row("scale", f"2-rank CPU eval, {n} JPEGs in {n // chunk} chunks of {chunk}: balanced vs whole-chunk shards",
            n / best["balanced"], n / best["chunks"], "chunk runs", "img/s", None,
            f"slowest rank's image step {best['balanced_encode']:.1f}s vs {best['chunks_encode']:.1f}s "
            f"({n // 2} vs {3 * chunk} images on the busiest rank); wall time includes both ranks' start-up")
