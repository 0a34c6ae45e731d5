"""Precision: which one a run uses, and converting a model to half precision exactly as `clip.load` does."""
from __future__ import annotations

import torch
from torch import nn

from zeroshot.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _cpu_flags() -> set[str]:
    from zeroshot.models.tuning import cpuinfo

    return set((cpuinfo("flags") or "").split())


# Native half-precision matmul on x86 CPUs; elsewhere half precision is emulated and slower than fp32.
NATIVE_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def native_cpu_precision(precision: str) -> bool:
    flags = _cpu_flags()
    return any(f in flags for f in NATIVE_CPU_FLAGS[precision])


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """auto: fp16 on CUDA (as clip.load), fp32 on the CPU (the exact result is the default there).

    bf16 (or fp16) on a CPU runs where the CPU multiplies it natively (AVX512-BF16 or AMX; AVX512-FP16 or AMX-FP16),
    about twice the fp32 rate. Elsewhere torch emulates it: on an AVX2 EPYC ViT-B/32 encoded 1.7 img/s in bf16
    against 11.9 in fp32, so the run stops and says so rather than run 7x slower.
    """
    if precision in (None, "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}. Choose one of: auto, {', '.join(PRECISIONS)}")
    if precision != "fp32" and device.type == "cpu" and not native_cpu_precision(precision):
        need = " or ".join(NATIVE_CPU_FLAGS[precision])
        raise ConfigError(f"precision={precision} on this CPU would be emulated (no {need} in /proc/cpuinfo): about 7x "
                         "slower than fp32 for ViT-B/32 (see benchmarks/README.md). Use precision=fp32 here, or a CPU with "
                         f"native {precision}, or a GPU.")
    return precision


# Parameters that OpenAI's convert_weights casts to half precision: conv and linear weights and biases,
# the attention projections and the two output projections. LayerNorm, BatchNorm, the embeddings,
# LayerScale, logit_scale and logit_bias stay fp32.
_HALF_PARAMS = ("in_proj_weight", "in_proj_bias", "text_projection", "text_projection_bias", "proj")


def convert_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast what `clip.model.convert_weights` casts (to fp16, or here to any dtype), and nothing else."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.data = m.weight.data.to(dtype)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(dtype)
        for name in _HALF_PARAMS:
            p = getattr(m, name, None)
            if isinstance(p, nn.Parameter):
                p.data = p.data.to(dtype)
    return model
