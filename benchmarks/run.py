"""Side-by-side speed benchmark: zeroshot vs open_clip (and HF transformers), same weights, same inputs, one run.

    python benchmarks/run.py                   # everything (about 30 minutes on 2 CPU cores)
    python benchmarks/run.py --only image text # some sections (the list is in --help)
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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import balance  # noqa: E402
import precision  # noqa: E402
import provenance  # noqa: E402
import scale  # noqa: E402
import speed  # noqa: E402
import startup  # noqa: E402
import zoo  # noqa: E402
from common import ROWS  # noqa: E402

SECTIONS = {"image": speed.bench_image, "text": speed.bench_text, "eval": speed.bench_eval, "memory": speed.bench_memory,
            "cache": speed.bench_cache, "fingerprint": provenance.bench_fingerprint, "zoo": zoo.bench_zoo,
            "bf16": precision.bench_bf16, "startup": startup.bench_startup, "shards": scale.bench_shards,
            "balance": balance.bench_balance}


def cpu_flags() -> str:
    from zeroshot.models.precision import _cpu_flags

    flags = _cpu_flags()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16") if f in flags)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    if args.quick:
        args.reps = min(args.reps, 2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}, cpu flags: {cpu_flags()}")
    for name in args.only or SECTIONS:
        SECTIONS[name](args)
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
