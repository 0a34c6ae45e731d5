"""The fused and GEMM-form fast paths of zeroshot/models/layers.py and clip.py against the plain forms they replace.

Each fast path is fed fp32 here and must give the plain path's numbers to 1e-5; the paths' dispatch
(which runs where) and the bf16 numerics are checked too. Nothing here is timed: the speed is in benchmarks/."""
import pytest
import torch
import torch.nn.functional as F

from zeroshot.models import clip, layers
from zeroshot.models.layers import (
    MLP,
    LayerNorm,
    attention_by_gemm,
    patch_embed_by_gemm,
)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return ((a - b).abs().max() / b.abs().max()).item() < tol


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu", "gelu_tanh"])
def test_fused_mlp_equals_plain_in_fp32(activation):
    torch.manual_seed(0)
    mlp = MLP(64, 256, activation).eval()
    x = torch.randn(3, 7, 64) * 3
    plain = mlp.c_proj(mlp.gelu(mlp.c_fc(x)))  # grad enabled, weights need grad: the plain path
    with torch.inference_mode():
        fused = mlp(x)
    assert fused.shape == plain.shape and _close(fused, plain.detach())
    reference = {"quick_gelu": lambda h: h * torch.sigmoid(1.702 * h), "gelu": F.gelu,
                 "gelu_tanh": lambda h: F.gelu(h, approximate="tanh")}[activation]
    with torch.no_grad():
        assert _close(fused, mlp.c_proj(reference(mlp.c_fc(x))))


def test_fused_mlp_is_not_used_under_autograd():
    """The in-place activation would break backward: with gradients on, the plain path runs and backward works."""
    torch.manual_seed(0)
    mlp = MLP(8, 32, "quick_gelu")
    x = torch.randn(4, 8, requires_grad=True)
    mlp(x).sum().backward()
    expected = torch.autograd.grad(mlp.c_proj(mlp.gelu(mlp.c_fc(x))).sum(), x)[0]
    assert torch.allclose(x.grad, expected)


@pytest.mark.parametrize("lq, lk, causal, masked", [(50, 50, False, False), (77, 77, True, False), (1, 257, False, True),
                                                    (1, 50, False, False)])
def test_attention_by_gemm_equals_sdpa_in_fp32(lq, lk, causal, masked):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, lq, 16) * 2, torch.randn(2, 3, lk, 16) * 2, torch.randn(2, 3, lk, 16)
    mask = (torch.arange(lk)[None, :] <= torch.tensor([lk // 3, lk - 1])[:, None]).view(2, 1, 1, lk) if masked else None
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert _close(attention_by_gemm(q, k, v, mask, causal), ref)


@pytest.mark.parametrize("patch, resolution", [(32, 224), (16, 224), (14, 224), (14, 336)])
def test_patch_embed_by_gemm_equals_conv_in_fp32(patch, resolution):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 48, kernel_size=patch, stride=patch, bias=False)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.no_grad():
        assert _close(patch_embed_by_gemm(x, conv.weight), conv(x).flatten(2).transpose(1, 2))


def test_layernorm_without_round_trip_matches_it_in_bf16():
    """bf16 input, fp32 weights: F.layer_norm computes in fp32 inside, so it equals the fp32 round trip up to the
    final rounding (at most one bf16 ulp apart, and nearly always identical)."""
    torch.manual_seed(0)
    ln = LayerNorm(768)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = (torch.randn(64, 50, 768) * 4 + 1).bfloat16()
    with torch.inference_mode():
        out = ln(x)
        exact = F.layer_norm(x.float(), (768,), ln.weight, ln.bias, ln.eps)
    assert out.dtype == torch.bfloat16
    assert bool(((out.float() - exact).abs() <= exact.abs() * 2.0**-7 + 1e-5).all())  # one rounding to bf16
    assert (out != exact.bfloat16()).float().mean().item() < 1e-3


def test_fast_paths_dispatch_only_for_half_precision_on_the_cpu(monkeypatch):
    """fp32 keeps SDPA and the convolution (the exact default); bf16 on the CPU without gradients takes the GEMM forms."""
    calls = []
    monkeypatch.setattr(layers, "attention_by_gemm", lambda *a, **k: calls.append("attn") or torch.zeros(1))
    monkeypatch.setattr(clip, "patch_embed_by_gemm", lambda *a, **k: calls.append("patch") or torch.zeros(1))
    q = torch.randn(1, 1, 4, 8)
    vit = clip.VisionTransformer(clip.CLIPConfig(vision_layers=1, vision_width=64, vision_head_width=32, image_resolution=64,
                                                 vision_patch_size=32))
    with torch.inference_mode():
        layers.attention(q, q, q)
        vit.patches(torch.randn(1, 3, 64, 64))
        assert calls == []
        layers.attention(q.bfloat16(), q.bfloat16(), q.bfloat16())
        vit.bfloat16().patches(torch.randn(1, 3, 64, 64).bfloat16())
        assert calls == ["attn", "patch"]
    layers.attention(q.bfloat16(), q.bfloat16(), q.bfloat16())  # gradients on: SDPA
    assert calls == ["attn", "patch"]
