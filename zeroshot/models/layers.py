"""The layers both towers are built from: pre-LN transformer blocks with OpenAI's parameter names, and the
fast paths that compute the same functions with less time outside the GEMMs.

Fast paths, each equal to the plain form in fp32 (tests/test_fast_paths.py):
- in bf16 on the CPU every linear layer is one oneDNN call with its bias, activation and residual add in the GEMM's
  epilogue (`fused_linear`, the op Inductor emits for linear + GELU/SiLU); QuickGELU's 1.702 is folded into
  LayerNorm's weights and a scaled copy of c_proj's weight, so the activation is the epilogue's swish;
- elsewhere (fp32, fp16) `MLP` folds QuickGELU's 1.702 into addmm's alpha/beta and runs the activation in one pass;
- `LayerNorm` takes a bf16/fp16 input with fp32 weights on the CPU directly (fp32 inside, no dtype copies);
- in bf16/fp16 on the CPU, `attention` runs SDPA's kernel or two batched GEMMs around a softmax, whichever this CPU
  runs faster (measured once per CPU model and torch version: zeroshot/models/tuning.py), and the patch embedding
  as one GEMM (`patch_embed_by_gemm`), faster there than oneDNN's convolution;
- in bf16/fp16 on the CPU the ResNet's BatchNorms are folded into the convolutions before them, and in bf16 the
  ReLU after them (and a bottleneck's residual add) run in oneDNN's convolution epilogue (`conv_bn`): one to
  three passes over each feature map fewer.
Under autograd every layer takes its plain form.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from zeroshot.models import tuning

QUICK_GELU_SCALE = 1.702


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always normalizes in fp32, so fp16/bf16 models keep OpenAI's numerics.

    On the CPU, `F.layer_norm` takes a bf16/fp16 input with fp32 weights and computes in fp32 inside,
    rounding once on the way out: the same numbers as the fp32 round trip (one output in 40,000 differs by an
    ulp) without the two dtype copies, which cost 3x the normalization itself. Elsewhere the round trip stays.
    """

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """LayerNorm(x) * scale; the scale multiplies the fp32 weight and bias (two vectors), not the output."""
        w, b = self.weight, self.bias
        if scale != 1.0:
            w, b = w * scale, b * scale
        if x.dtype == w.dtype or (x.device.type == "cpu" and w.dtype == torch.float32):
            return F.layer_norm(x, self.normalized_shape, w, b, self.eps)
        return F.layer_norm(x.float(), self.normalized_shape, w.float(), b.float(), self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with; exact GELU would change the features.

    This is the plain form, used under autograd; without it `MLP` runs the same function in one pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU, "gelu_tanh": partial(nn.GELU, approximate="tanh")}


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (open_clip's ls_1/ls_2); kept fp32 and cast to the input's dtype."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


def half_on_cpu(x: torch.Tensor) -> bool:
    """Whether `x` takes the CPU's half-precision fast paths: bf16/fp16 on the CPU, with no gradient to keep.

    Never while torch.compile traces: Inductor fuses the plain ops itself (and prepacks the weights under
    freezing), and the fast paths' Python choices (the measured attention kernel, the cached scaled weights) would
    be guards that recompile; traced, the model is one graph with no break (tests/test_fast_paths.py)."""
    return (x.device.type == "cpu" and x.dtype != torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


def fuses_epilogues(x: torch.Tensor) -> bool:
    """Whether `x` takes the fused-epilogue linears: bf16 on the CPU, no gradient, and oneDNN with native bf16."""
    return half_on_cpu(x) and x.dtype == torch.bfloat16 and _onednn_bf16()


@functools.cache
def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# activation -> oneDNN's post-op name and algorithm, as torch.ops.mkldnn._linear_pointwise spells them
EPILOGUES = {"none": ("none", ""), "swish": ("swish", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}
PLAIN_ACTIVATIONS = {"none": lambda h: h, "swish": F.silu, "gelu": F.gelu, "gelu_tanh": partial(F.gelu, approximate="tanh")}


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
                 residual: torch.Tensor | None = None) -> torch.Tensor:
    """activation(x @ weight.T + bias) (+ residual) as one oneDNN GEMM, the bias, activation and add in its epilogue:
    no broadcast copy of the bias (what addmm makes first), no separate pass over the output. `activation` is a
    key of EPILOGUES; oneDNN's swish is x * sigmoid(x) (the op ignores an alpha), so QuickGELU's 1.702 is folded
    into the inputs by the caller. A residual goes with no activation (the binary op takes none)."""
    lp = torch.ops.mkldnn._linear_pointwise
    if residual is not None:
        if activation != "none":
            raise ValueError("fused_linear: a residual add takes no activation")
        return lp.binary(x, residual, weight, bias, "add")
    attr, algorithm = EPILOGUES[activation]
    return lp(x, weight, bias, attr, [], algorithm)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """`fused_linear` where the input takes it (`fuses_epilogues`), else the same function in plain steps."""
    if fuses_epilogues(x):
        return fused_linear(x, weight, bias, activation, residual)
    y = PLAIN_ACTIVATIONS[activation](F.linear(x, weight, bias))
    return y if residual is None else residual + y


def attention_by_gemm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                      causal: bool = False) -> torch.Tensor:
    """SDPA's function as two batched GEMMs around a softmax (fp32 inside): q [N, H, Lq, d], k, v [N, H, L, d].

    `mask` [.., Lq, L] is True where a query may attend; `causal` lets query i see keys 0..i."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)  # [N, H, Lq, L]
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril_()  # [Lq, L]
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # [N, H, Lq, d]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v. On the CPU in bf16/fp16 the faster of SDPA's kernel and the GEMM form differs
    between CPUs (GEMM form 1.7-2x faster on an AVX512-BF16 EPYC, SDPA 2x faster on an AMX Xeon, for the 50-257
    tokens of CLIP's towers: benchmarks/README.md), so `tuning.attention_kernel` picks it by measurement; SDPA reads
    the strided q, k, v views of the fused projection directly (no head-split copies). Everywhere else, SDPA."""
    if half_on_cpu(q) and tuning.attention_kernel(q.dtype, ATTENTION_KERNELS) == "gemm":
        return attention_by_gemm(q, k, v, mask, causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


ATTENTION_KERNELS = {"sdpa": F.scaled_dot_product_attention, "gemm": attention_by_gemm}  # what tuning measures


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (in_proj_weight, out_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * width, width)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """out_proj(attention) [N, L, D], plus `residual` when given (added in the GEMM's epilogue where it fuses)."""
        n, l, d = x.shape
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias)  # [N, L, 3D]
        qkv = qkv.view(n, l, 3, self.heads, d // self.heads)  # [N, L, 3, H, D/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [N, H, L, D/H], strided views
        x = attention(q, k, v, causal=causal)  # [N, H, L, D/H]
        x = x.transpose(1, 2).reshape(n, l, d)  # [N, L, D]
        return linear(x, self.out_proj.weight, self.out_proj.bias, residual=residual)

    def attend_from(self, x: torch.Tensor, query: torch.Tensor, causal: bool = False,
                    residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output at one position per sequence (`query` [N]); keys and values from all of `x`.

        The last block only has to produce the feature that is read out (CLS or end-of-text), so it
        projects one query per sequence instead of L. Same numbers, a fraction of the block's work.
        """
        n, l, d = x.shape
        h = self.heads
        rows = torch.arange(n, device=x.device)
        w, b = self.in_proj_weight, self.in_proj_bias
        q = linear(x[rows, query], w[:d], b[:d]).view(n, h, 1, d // h)  # [N, H, 1, D/H]
        kv = linear(x, w[d:], b[d:]).view(n, l, 2, h, d // h)  # [N, L, 2, H, D/H]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x [N, H, L, D/H]
        mask = None
        if causal:  # the query at position p sees keys 0..p
            mask = (torch.arange(l, device=x.device)[None, :] <= query[:, None]).view(n, 1, 1, l)  # [N, 1, 1, L]
        x = attention(q, k, v, mask)  # [N, H, 1, D/H]
        return linear(x.reshape(n, d), self.out_proj.weight, self.out_proj.bias, residual=residual)  # [N, D]


class MLP(nn.Module):
    """c_fc, activation, c_proj (OpenAI's names), with the activation in one pass when no gradient is needed.

    QuickGELU is x * sigmoid(1.702 x) = silu(1.702 x) / 1.702. Where the linears fuse their epilogues
    (`fuses_epilogues`), the caller hands in 1.702 x (LayerNorm's weights scaled, `input_scale`), c_fc's epilogue
    adds 1.702 b and applies swish, and c_proj reads a copy of its weight divided by 1.702 (made once per weight
    version: the one extra copy, 1/6 of a block's weights). Elsewhere the two GEMMs apply the scale factors in
    addmm's alpha and beta, with one in-place silu between them; GELU runs in place. Same function, float
    rounding apart.
    """

    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = ACTIVATIONS[activation]()
        self.c_proj = nn.Linear(hidden, width)
        self.activation = activation
        self._scaled_proj: tuple[tuple, torch.Tensor] | None = None  # (weight's identity, weight / 1.702)

    def input_scale(self, x: torch.Tensor) -> float:
        """What the caller multiplies this MLP's input by (through LayerNorm's weights) for `forward(x)`."""
        return QUICK_GELU_SCALE if self.activation == "quick_gelu" and fuses_epilogues(x) else 1.0

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """mlp(x) (+ residual); where the epilogues fuse, x arrives multiplied by `input_scale(x)`."""
        if torch.is_grad_enabled() and (x.requires_grad or self.c_fc.weight.requires_grad):
            y = self.c_proj(self.gelu(self.c_fc(x)))  # the plain form, which autograd can follow
            return y if residual is None else residual + y
        if fuses_epilogues(x):
            return self._fused(x, residual)
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N*L, D]
        fc, proj = self.c_fc, self.c_proj
        if self.activation == "quick_gelu":
            h = torch.addmm(fc.bias, x, fc.weight.t(), beta=1.702, alpha=1.702)  # 1.702 * c_fc(x): [N*L, hidden]
            F.silu(h, inplace=True)  # 1.702 * QuickGELU(c_fc(x))
            x = torch.addmm(proj.bias, h, proj.weight.t(), alpha=1 / 1.702)  # [N*L, D]
        else:
            h = torch.ops.aten.gelu_(F.linear(x, fc.weight, fc.bias), approximate=self.gelu.approximate)
            x = F.linear(h, proj.weight, proj.bias)
        x = x.view(*shape[:-1], -1)  # [..., D]
        return x if residual is None else x.add_(residual)

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        fc, proj = self.c_fc, self.c_proj
        if self.activation != "quick_gelu":
            h = fused_linear(x, fc.weight, fc.bias, self.activation)
            return fused_linear(h, proj.weight, proj.bias, residual=residual)
        h = fused_linear(x, fc.weight, fc.bias * QUICK_GELU_SCALE, "swish")  # 1.702 * QuickGELU(c_fc(x))
        return fused_linear(h, self.scaled_proj_weight(), proj.bias, residual=residual)

    def scaled_proj_weight(self) -> torch.Tensor:
        """c_proj's weight / 1.702, remade whenever the weight changes (new storage, in-place edit, dtype)."""
        w = self.c_proj.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._scaled_proj is None or self._scaled_proj[0] != key:
            with torch.no_grad():
                self._scaled_proj = (key, (w.float() / QUICK_GELU_SCALE).to(w.dtype))
        return self._scaled_proj[1]


@dataclass
class BlockSpec:
    """What one tower's transformer blocks are made of; built from the CLIPConfig for that tower."""

    width: int
    layers: int
    heads: int
    mlp_ratio: float
    activation: str
    ln_eps: float
    layer_scale: bool
    causal: bool = False


class ResidualAttentionBlock(nn.Module):
    def __init__(self, s: BlockSpec):
        super().__init__()
        self.attn = Attention(s.width, s.heads)
        self.ln_1 = LayerNorm(s.width, eps=s.ln_eps)
        hidden = round(s.width * s.mlp_ratio)  # open_clip's ratios (4.9231 for 8192 / 1664) round to the width
        self.mlp = MLP(s.width, hidden, s.activation)
        self.ln_2 = LayerNorm(s.width, eps=s.ln_eps)
        self.ls_1 = LayerScale(s.width) if s.layer_scale else nn.Identity()
        self.ls_2 = LayerScale(s.width) if s.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        if self.fuses_residuals(x):  # the residual adds in out_proj's and c_proj's epilogues
            x = self.attn(self.ln_1(x), causal=causal, residual=x)
            return self.mlp(self.ln_2(x, self.mlp.input_scale(x)), residual=x)
        x = x + self.ls_1(self.attn(self.ln_1(x), causal=causal))
        return x + self.ls_2(self.mlp(self.ln_2(x, self.mlp.input_scale(x))))

    def forward_at(self, x: torch.Tensor, query: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The block's output at one position per sequence: [N, L, D] -> [N, D]."""
        y = x[torch.arange(x.shape[0], device=x.device), query]  # [N, D]
        if self.fuses_residuals(x):
            y = self.attn.attend_from(self.ln_1(x), query, causal, residual=y)
            return self.mlp(self.ln_2(y, self.mlp.input_scale(y)), residual=y)
        y = y + self.ls_1(self.attn.attend_from(self.ln_1(x), query, causal))
        return y + self.ls_2(self.mlp(self.ln_2(y, self.mlp.input_scale(y))))

    def fuses_residuals(self, x: torch.Tensor) -> bool:
        return fuses_epilogues(x) and isinstance(self.ls_1, nn.Identity)


class Transformer(nn.Module):
    """A stack of pre-LN blocks over batch-first input [N, L, D]; `causal` masks future positions (text)."""

    def __init__(self, s: BlockSpec):
        super().__init__()
        self.width, self.layers, self.causal = s.width, s.layers, s.causal
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(s) for _ in range(s.layers)])

    def forward(self, x: torch.Tensor, readout: torch.Tensor | None = None) -> torch.Tensor:
        """[N, L, D] -> [N, L, D]; or, given `readout` positions [N], only those outputs: [N, D]."""
        blocks = list(self.resblocks)
        last = blocks.pop() if readout is not None else None
        for block in blocks:
            x = block(x, causal=self.causal)
        return x if last is None else last.forward_at(x, readout, causal=self.causal)


def patch_embed_by_gemm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """conv2d(x, weight, stride=p) for a [width, 3, p, p] kernel, as one GEMM: [N, 3, R, R] -> [N, (R/p)^2, width]."""
    n, c, r, _ = x.shape
    p = weight.shape[-1]
    g = r // p
    x = x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # [N, grid, grid, 3, p, p]
    x = x.reshape(n, g * g, c * p * p)  # [N, grid*grid, 3*p*p] (the one copy)
    return F.linear(x, weight.reshape(weight.shape[0], -1))  # [N, grid*grid, width]


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, relu: bool = False, *,
            residual: torch.Tensor | None = None, fold: bool | None = None) -> torch.Tensor:
    """bn(conv(x)) (+ residual), then ReLU if `relu`, for an inference-mode BatchNorm. Folded (`fold`; by default
    where `half_on_cpu(x)` and the BatchNorm is in eval mode), it is one convolution with the BatchNorm's scale in
    its weights and its shift as the bias: conv(x, w * s) + (beta - mean * s) with s = gamma / sqrt(var + eps),
    computed in fp32 and rounded once to the convolution's dtype, so the feature map is not read and written a
    second time; in bf16 with oneDNN the residual add and the ReLU run in the convolution's epilogue too. The
    same function to fp32 rounding (tests/test_fast_paths.py); in bf16 the folded weights round once where the
    plain path rounds the convolution's output (and the epilogue adds the residual before rounding)."""
    if fold is None:
        fold = half_on_cpu(x) and not bn.training and bn.running_var is not None
    if not fold:
        y = bn(conv(x))
    else:
        w, b = folded_conv_bn(conv, bn)
        if relu and fuses_epilogues(x) and isinstance(conv.padding, tuple):
            args = (w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu", [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, "relu", [], "")
        y = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.relu(y, inplace=True) if relu else y


def folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv with bn folded in; remade whenever either's tensors change (storage, version, dtype)."""
    tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    key = tuple((t.data_ptr(), t._version, t.dtype) if t is not None else None for t in tensors) + (bn.eps,)
    cached = getattr(conv, "_folded_bn", None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            scale = bn.running_var.float().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.float()
            shift = -bn.running_mean.float() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.float()
            if conv.bias is not None:
                shift = shift + conv.bias.float() * scale
            w = conv.weight.float() * scale.view(-1, 1, 1, 1)
            w = w.to(conv.weight.dtype, memory_format=torch.channels_last if conv.weight.is_contiguous(
                memory_format=torch.channels_last) else torch.contiguous_format)
            cached = (key, w, shift.to(conv.weight.dtype))
        conv._folded_bn = cached
    return cached[1], cached[2]
