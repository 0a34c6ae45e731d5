"""Kernel choices that depend on the CPU, made by a short measurement at first use and remembered per CPU model
and torch version in `<cache>/cpu_kernels.json` (atomic writes; delete the file to measure again).

Attention in bf16/fp16 on the CPU: SDPA's kernel against two batched GEMMs around a softmax (`attention_by_gemm`).
Round three measured the GEMM form 1.7-2x faster on an AVX512-BF16 EPYC without AMX; on an AMX Xeon SDPA is 2x
faster (benchmarks/README.md), so neither can be the default for all. `ZEROSHOT_ATTENTION=sdpa|gemm` overrides
the choice (`auto`, or unset, measures).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import time

import torch

from zeroshot.errors import ConfigError
from zeroshot.log import log
from zeroshot.paths import default_cache_dir

ATTENTION_KERNELS = ("sdpa", "gemm")
CACHE_NAME = "cpu_kernels.json"
# [N, heads, tokens, head width] of ViT-B/32 and ViT-B/16 batches: the shapes the choice is made on
PROBE_SHAPES = ((16, 12, 50, 64), (4, 12, 197, 64))
_chosen: dict[str, str] = {}


@functools.cache  # asked per attention call: /proc/cpuinfo is 0.25 ms a read
def cpuinfo(field: str) -> str | None:
    """The value of the first `field` line of /proc/cpuinfo ("model name", "flags"); None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cache_key(dtype: torch.dtype) -> str:
    return f"attention {str(dtype).removeprefix('torch.')} | {cpu_model()} | torch {torch.__version__}"


def attention_kernel(dtype: torch.dtype, kernels: dict) -> str:
    """"sdpa" or "gemm" (the keys of `kernels`, the functions themselves) for half-precision attention on this CPU:
    the override, else the remembered measurement, else a measurement now (well under a second), written to the
    cache for the next run."""
    forced = os.environ.get("ZEROSHOT_ATTENTION", "auto") or "auto"
    if forced != "auto":
        if forced not in ATTENTION_KERNELS:
            raise ConfigError(f"ZEROSHOT_ATTENTION={forced!r}: use one of auto, {', '.join(ATTENTION_KERNELS)}")
        return forced
    key = cache_key(dtype)
    if key not in _chosen:
        _chosen[key] = _remembered(key) or _measure_and_remember(key, dtype, kernels)
    return _chosen[key]


def _cache_path():
    return default_cache_dir() / CACHE_NAME


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remembered(key: str) -> str | None:
    entry = _read_cache().get(key)
    choice = entry.get("choice") if isinstance(entry, dict) else None
    return choice if choice in ATTENTION_KERNELS else None


def _measure_and_remember(key: str, dtype: torch.dtype, kernels: dict) -> str:
    from zeroshot.files import atomic_write

    seconds = measure_attention(dtype, kernels)
    choice = min(seconds, key=seconds.get)
    log.info("attention in %s on this CPU: %s (measured %s)", str(dtype).removeprefix("torch."), choice,
             ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in seconds.items()))
    data = _read_cache()
    data[key] = {"choice": choice, "seconds": seconds, "shapes": [list(s) for s in PROBE_SHAPES]}
    try:
        with atomic_write(_cache_path(), "w") as f:
            json.dump(data, f, indent=1)
    except OSError as e:  # a read-only cache costs a measurement per process, not the run
        log.warning("could not remember the attention choice in %s: %s", _cache_path(), e)
    return choice


def measure_attention(dtype: torch.dtype, kernels: dict, reps: int = 3) -> dict[str, float]:
    """Seconds for each of `kernels` {name: fn(q, k, v)} on PROBE_SHAPES (summed; best of `reps` alternating rounds,
    so a busy moment on a shared machine hits all alike). q, k, v are the strided views of a fused projection, as
    the model has them."""
    best = {k: [float("inf")] * len(PROBE_SHAPES) for k in kernels}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        inputs = []
        for n, h, l, d in PROBE_SHAPES:
            qkv = torch.randn(n, l, 3 * h * d, generator=gen).to(dtype)
            inputs.append(qkv.view(n, l, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0))
        for _ in range(reps + 1):  # the first round warms up and counts like the others (best of)
            for name, fn in kernels.items():
                for i, (q, k, v) in enumerate(inputs):
                    t = time.perf_counter()
                    fn(q, k, v)
                    best[name][i] = min(best[name][i], time.perf_counter() - t)
    return {name: sum(times) for name, times in best.items()}
