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
    """fp32 keeps SDPA and the convolution (the exact default); bf16 on the CPU without gradients takes the GEMM forms
    (here with the attention choice forced to the GEMM form; the choice itself is tested below)."""
    monkeypatch.setenv("ZEROSHOT_ATTENTION", "gemm")
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


# --- round four: fused GEMM epilogues (oneDNN's linear with bias, activation and residual add inside) ---

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "swish", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_linear_equals_plain_in_fp32(activation, with_residual):
    """oneDNN's linear + epilogue, fed fp32, against F.linear, the activation and the add in separate steps."""
    if with_residual and activation != "none":
        with pytest.raises(ValueError):
            layers.fused_linear(torch.randn(2, 8), torch.randn(4, 8), None, activation, torch.randn(2, 4))
        return
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 7, 64) * 2, torch.randn(96, 64) / 8, torch.randn(96)
    residual = torch.randn(3, 7, 96) if with_residual else None
    plain = layers.PLAIN_ACTIVATIONS[activation](F.linear(x, w, b))
    plain = plain if residual is None else plain + residual
    with torch.inference_mode():
        fused = layers.fused_linear(x, w, b, activation, residual)
    assert fused.shape == plain.shape and _close(fused, plain)


def _fused_block_outputs(activation: str, layer_scale: bool, fp32_fused: bool, monkeypatch):
    """A block's forward and forward_at, plain (autograd on) and through the fused-epilogue path fed fp32."""
    torch.manual_seed(0)
    block = layers.ResidualAttentionBlock(layers.BlockSpec(64, 1, 4, 4.0, activation, 1e-5, layer_scale))
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.2) if p.dim() == 1 else None
    x, query = torch.randn(3, 9, 64), torch.tensor([0, 4, 8])
    plain = (block(x, causal=True), block.forward_at(x, query, causal=True))
    if fp32_fused:  # the fused path, fed fp32: every linear goes through oneDNN's epilogues
        monkeypatch.setattr(layers, "fuses_epilogues", lambda t: not torch.is_grad_enabled())
    with torch.inference_mode():
        fused = (block(x, causal=True), block.forward_at(x, query, causal=True))
    return plain, fused


@needs_onednn
@pytest.mark.parametrize("activation", ["quick_gelu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("layer_scale", [False, True])
def test_fused_block_equals_plain_in_fp32(activation, layer_scale, monkeypatch):
    """The whole block on the fused path (QuickGELU's 1.702 in LayerNorm's weights and c_proj's scaled copy, the
    residual adds in the epilogues, or outside them with LayerScale) equals the plain block to 1e-5."""
    calls = []
    real = layers.fused_linear
    monkeypatch.setattr(layers, "fused_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain, fused = _fused_block_outputs(activation, layer_scale, True, monkeypatch)
    assert calls  # the fused path really ran
    for a, b in zip(fused, plain):
        assert a.shape == b.shape and _close(a, b.detach())


def test_scaled_proj_weight_follows_the_weight():
    """The copy of c_proj's weight / 1.702 is remade when the weight is edited in place or replaced."""
    mlp = MLP(8, 32, "quick_gelu")
    first = mlp.scaled_proj_weight()
    assert torch.allclose(first * 1.702, mlp.c_proj.weight)
    assert mlp.scaled_proj_weight() is first  # made once
    with torch.no_grad():
        mlp.c_proj.weight.mul_(2)
    assert torch.allclose(mlp.scaled_proj_weight() * 1.702, mlp.c_proj.weight)
    mlp.bfloat16()
    assert mlp.scaled_proj_weight().dtype == torch.bfloat16


def test_fused_epilogues_dispatch_only_for_bf16_on_the_cpu_without_gradients():
    x = torch.randn(2, 4)
    with torch.inference_mode():
        assert not layers.fuses_epilogues(x) and not layers.fuses_epilogues(x.half())
        assert layers.fuses_epilogues(x.bfloat16()) == layers._onednn_bf16()
    assert not layers.fuses_epilogues(x.bfloat16())  # gradients on


# --- round four: attention kernel chosen by measurement, per CPU model and torch version ---

def test_attention_choice_is_measured_once_and_remembered(tmp_path, monkeypatch):
    from zeroshot.models import tuning

    monkeypatch.setenv("ZEROSHOT_CACHE", str(tmp_path))
    monkeypatch.delenv("ZEROSHOT_ATTENTION", raising=False)
    monkeypatch.setattr(tuning, "_chosen", {})
    measured = []
    monkeypatch.setattr(tuning, "measure_attention", lambda dtype, kernels: measured.append(dtype) or {"sdpa": 2.0, "gemm": 1.0})
    kernels = layers.ATTENTION_KERNELS
    assert tuning.attention_kernel(torch.bfloat16, kernels) == "gemm"
    assert tuning.attention_kernel(torch.bfloat16, kernels) == "gemm" and measured == [torch.bfloat16]
    saved = __import__("json").loads((tmp_path / tuning.CACHE_NAME).read_text())
    key = tuning.cache_key(torch.bfloat16)
    assert saved[key]["choice"] == "gemm" and tuning.cpu_model() in key and torch.__version__ in key
    monkeypatch.setattr(tuning, "_chosen", {})  # a new process: read from the file, not measured again
    assert tuning.attention_kernel(torch.bfloat16, kernels) == "gemm" and measured == [torch.bfloat16]
    monkeypatch.setattr(tuning, "measure_attention", lambda dtype, kernels: {"sdpa": 1.0, "gemm": 2.0})
    assert tuning.attention_kernel(torch.float16, kernels) == "sdpa"  # another dtype, its own entry
    assert set(__import__("json").loads((tmp_path / tuning.CACHE_NAME).read_text())) == {key, tuning.cache_key(torch.float16)}


def test_attention_measurement_returns_both_kernels():
    from zeroshot.models import tuning

    seconds = tuning.measure_attention(torch.float32, layers.ATTENTION_KERNELS, reps=1)
    assert set(seconds) == {"sdpa", "gemm"} and all(s > 0 for s in seconds.values())


@pytest.mark.parametrize("kernel", ["sdpa", "gemm"])
def test_attention_choice_can_be_forced_and_both_branches_agree(kernel, monkeypatch):
    """Both branches of the choice, forced: each runs its kernel, and a bf16 block gives the same output either way
    (within bf16 rounding: the GEMM form rounds the scores to bf16)."""
    monkeypatch.setenv("ZEROSHOT_ATTENTION", kernel)
    calls = []
    real = layers.attention_by_gemm
    monkeypatch.setattr(layers, "attention_by_gemm", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    block = layers.ResidualAttentionBlock(layers.BlockSpec(64, 1, 4, 4.0, "quick_gelu", 1e-5, False)).bfloat16()
    x = torch.randn(2, 50, 64)
    with torch.inference_mode():
        out = block(x.bfloat16()).float()
        ran_gemm = bool(calls)
        monkeypatch.setenv("ZEROSHOT_ATTENTION", "sdpa" if kernel == "gemm" else "gemm")
        other = block(x.bfloat16()).float()
    assert ran_gemm == (kernel == "gemm") and bool(calls)
    assert F.cosine_similarity(out.flatten(1), other.flatten(1)).min() > 0.9999


def test_attention_override_names_its_choices(monkeypatch):
    from zeroshot.errors import UserError
    from zeroshot.models import tuning

    monkeypatch.setenv("ZEROSHOT_ATTENTION", "flash")
    with pytest.raises(UserError, match="ZEROSHOT_ATTENTION='flash'.*sdpa, gemm"):
        tuning.attention_kernel(torch.bfloat16, layers.ATTENTION_KERNELS)


def _conv_bn(k: int, bias: bool, seed: int = 0) -> tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]:
    """A conv and a BatchNorm in eval mode with non-trivial statistics, weights in NHWC order as the ResNet has them."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(16, 24, k, padding=k // 2, bias=bias).to(memory_format=torch.channels_last)
    bn = torch.nn.BatchNorm2d(24).eval()
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.2)
    return conv, bn


@pytest.mark.parametrize("k,bias", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_conv_bn_folded_equals_plain_in_fp32(k, bias, relu, with_residual):
    conv, bn = _conv_bn(k, bias)
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 24, 9, 9).contiguous(memory_format=torch.channels_last) if with_residual else None
    with torch.no_grad():
        plain = bn(conv(x)) + (residual if with_residual else 0)
        plain = F.relu(plain) if relu else plain
        assert _close(layers.conv_bn(conv, bn, x, relu, residual=residual, fold=True), plain)
        assert torch.equal(layers.conv_bn(conv, bn, x, relu, residual=residual, fold=False), plain)


def test_conv_bn_folds_only_for_half_precision_on_the_cpu_and_follows_the_statistics():
    conv, bn = _conv_bn(3, False)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        layers.conv_bn(conv, bn, x)
        assert not hasattr(conv, "_folded_bn")  # fp32: the plain path
        bn.train()
        layers.conv_bn(conv.bfloat16(), bn, x.bfloat16())
        assert not hasattr(conv, "_folded_bn")  # a training BatchNorm normalizes by the batch's statistics
        bn.eval()
        first = layers.conv_bn(conv, bn, x.bfloat16()).float()
        assert hasattr(conv, "_folded_bn")
        bn.running_var.mul_(4)  # new statistics (in place): the folded weights are remade
        second = layers.conv_bn(conv, bn, x.bfloat16()).float()
        plain = bn(conv(x.bfloat16())).float()
    assert F.cosine_similarity(second.flatten(1), plain.flatten(1)).min() > 0.999
    assert not torch.allclose(first, second)
    del conv._folded_bn
    with torch.enable_grad():  # under autograd: the plain form, which autograd can follow
        out = layers.conv_bn(conv.requires_grad_(True), bn, x.bfloat16())
    assert out.requires_grad and not hasattr(conv, "_folded_bn")


def test_conv_bn_epilogues_equal_conv_then_add_and_relu_in_bf16():
    if not layers._onednn_bf16():
        pytest.skip("this CPU has no native bf16 (oneDNN): the epilogue path does not run here")
    conv, bn = _conv_bn(3, False)
    conv, x = conv.bfloat16(), torch.randn(2, 16, 9, 9).bfloat16().contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 24, 9, 9).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = layers.conv_bn(conv, bn, x, relu=True)
        w, b = layers.folded_conv_bn(conv, bn)
        assert torch.equal(fused, F.relu(F.conv2d(x, w, b, padding=1)))
        # the residual add in the epilogue adds before rounding to bf16: within one bf16 rounding of the two steps
        with_add = layers.conv_bn(conv, bn, x, relu=True, residual=residual).float()
        steps = F.relu(F.conv2d(x, w, b, padding=1).float() + residual.float())
        assert _close(with_add, steps, 2 ** -7)


def test_a_traced_bf16_model_takes_the_plain_ops_in_one_graph(monkeypatch):
    """Under torch.compile the fast paths step aside (Inductor fuses the plain ops itself): both towers trace to one
    graph with no break, and calling the model outside a trace still takes the fused linears."""
    import torch._dynamo

    from zeroshot.models.clip import CLIP, CLIPConfig

    torch.manual_seed(0)
    model = CLIP(CLIPConfig(embed_dim=32, vision_layers=2, vision_width=64, vision_head_width=32, image_resolution=64,
                            vision_patch_size=32, context_length=16, vocab_size=100, eos_id=99,
                            transformer_width=64, transformer_heads=2, transformer_layers=2)).eval().requires_grad_(False).bfloat16()
    image, text = torch.randn(2, 3, 64, 64).bfloat16(), torch.randint(1, 99, (2, 16))
    calls = []
    real = layers.fused_linear
    monkeypatch.setattr(layers, "fused_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.inference_mode():
        for tower, x in ((model.encode_image, image), (model.encode_text, text)):
            torch._dynamo.reset()
            explained = torch._dynamo.explain(tower)(x)
            assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        assert calls == []
        model.encode_image(image)
    assert calls or not layers.fuses_epilogues(image)
