"""Parity with OpenAI's `clip` and open_clip on random weights of the real architectures."""
import copy

import pytest
import torch

from zeroshot.models.config import architecture_name, build_config, build_model
from architectures import ARCHITECTURES
from zeroshot.models.clip import CLIP
from conftest import random_model, randomize_batchnorm, rel_err

PROMPTS = ["a photo of a dog.", "a blurry photo of a large red car parked by the sea.", "x"]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_config_inferred_from_shapes(name):
    """Shape inference recovers all nine architectures (built on the meta device: no memory), by open_clip's names."""
    with torch.device("meta"):
        model = CLIP(ARCHITECTURES[name])
    config, assumed = build_config(model.state_dict())
    assert config == ARCHITECTURES[name] and assumed == []
    assert architecture_name(config) == name.replace("/", "-").replace("@336px", "-336")


def _openai_reference(clip_module, config, seed):
    c = config
    torch.manual_seed(seed)
    ref = clip_module.model.CLIP(c.embed_dim, c.image_resolution, c.vision_layers, c.vision_width, c.vision_patch_size,
                                 c.context_length, c.vocab_size, c.transformer_width, c.transformer_heads,
                                 c.transformer_layers).eval()
    return randomize_batchnorm(ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B/32", "ViT-B/16", "RN50"])
def test_parity_with_openai_clip(openai_clip, name):
    config = ARCHITECTURES[name]
    ref = _openai_reference(openai_clip, config, seed=0)
    ours = build_model(ref.state_dict())
    torch.manual_seed(1)
    images = torch.randn(2, 3, config.image_resolution, config.image_resolution)
    text = openai_clip.tokenize(PROMPTS)
    with torch.no_grad():
        assert rel_err(ref.encode_image(images), ours.encode_image(images)) < 1e-4
        assert rel_err(ref.encode_text(text), ours.encode_text(text)) < 1e-4
        assert rel_err(ref(images, text)[0], ours(images, text)[0]) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32-quickgelu", "RN50-quickgelu"])
def test_parity_with_open_clip(open_clip, name):
    torch.manual_seed(0)
    ref = open_clip.create_model(name).eval()
    ours = build_model(ref.state_dict())
    res = ours.image_resolution
    images = torch.randn(2, 3, res, res)
    text = open_clip.tokenize(PROMPTS)
    with torch.no_grad():
        assert rel_err(ref.encode_image(images), ours.encode_image(images)) < 1e-4
        assert rel_err(ref.encode_text(text), ours.encode_text(text)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RN101", "RN50x4", "ViT-L/14"])
def test_parity_with_openai_clip_larger(openai_clip, name):
    test_parity_with_openai_clip(openai_clip, name)


def full_length_text(model, text):
    """The textbook text tower: every block over all 77 positions, then the end-of-text row; no cut, no readout."""
    x = model.token_embedding(text) + model.positional_embedding  # [N, 77, D]
    for block in model.transformer.resblocks:
        x = block(x, causal=True)
    return model.ln_final(x)[torch.arange(len(text)), text.argmax(-1)] @ model.text_projection


def test_trimmed_text_equals_full_length(tiny_vit):
    """encode_text cuts the padding after the last end-of-text and computes only the end-of-text rows in the
    last block; the features must equal the full 77-position computation."""
    from zeroshot import tokenize

    text = tokenize(PROMPTS)
    assert int(text.argmax(-1).max()) + 1 < 77  # the batch really is cut
    with torch.no_grad():
        trimmed = tiny_vit.encode_text(text)
        full = full_length_text(tiny_vit, text)
    assert torch.allclose(trimmed, full, atol=1e-6, rtol=1e-5)


def test_full_length_reference_sees_the_causal_mask(tiny_vit):
    """The reference above would disagree if the mask leaked: without it, padding changes every feature."""
    from zeroshot import tokenize

    text = tokenize(PROMPTS)
    with torch.no_grad():
        trimmed = tiny_vit.encode_text(text)
        x = tiny_vit.token_embedding(text) + tiny_vit.positional_embedding
        for block in tiny_vit.transformer.resblocks:
            x = block(x, causal=False)
        leaky = tiny_vit.ln_final(x)[torch.arange(len(text)), text.argmax(-1)] @ tiny_vit.text_projection
    assert not torch.allclose(trimmed, leaky, atol=1e-4)


def test_tiny_resnet_roundtrip(tiny_rn):
    clone = build_model(copy.deepcopy(tiny_rn.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(clone.encode_image(x), tiny_rn.encode_image(x))


def test_missing_batchnorm_counters_are_tolerated(tiny_rn):
    sd = {k: v for k, v in tiny_rn.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) < len(tiny_rn.state_dict())  # the checkpoint really lacks them
    clone = build_model(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the counters are bookkeeping: the same features without them
        assert torch.equal(clone.encode_image(x), tiny_rn.encode_image(x))


def test_random_model_is_deterministic():
    from conftest import TINY_VIT

    a, b = random_model(TINY_VIT, 3), random_model(TINY_VIT, 3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
def test_every_open_clip_family_config_is_our_code():
    """Each of open_clip's configs without a timm or HF tower builds with zeroshot's model code, and its
    shapes name it back (meta device: no memory)."""
    from zeroshot.models.config import base_name, match_known, openclip_models, shape_fields
    from zeroshot.models.registry import family_fields
    from zeroshot.models.clip import CLIPConfig

    family = {n: c for n, c in openclip_models().items() if not c["vision_cfg"].get("timm_model_name")
              and not c["text_cfg"].get("hf_model_name") and "multimodal_cfg" not in c}
    assert len(family) >= 55
    for name, cfg in family.items():
        fields = family_fields(cfg)
        assert fields is not None, name
        with torch.device("meta"):
            model = CLIP(CLIPConfig(**fields))
        shapes = shape_fields(model.state_dict())
        matched, known = match_known(shapes)
        assert matched is not None and base_name(matched) == matched
        assert {k: v for k, v in known.items() if k != "activation"} == {k: v for k, v in fields.items() if k != "activation"}, name


def test_half_precision_converts_exactly_what_clip_load_converts(openai_clip):
    """fp16 as OpenAI's convert_weights: conv/linear weights and biases, attention projections, text_projection and
    proj in half; LayerNorm, BatchNorm, embeddings and logit_scale in fp32. Parity in fp16 where fp16 runs."""
    from zeroshot.models.clip import CLIPConfig
    from zeroshot.models.precision import convert_weights

    for c in (CLIPConfig(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16,
                         transformer_width=128, transformer_heads=2, transformer_layers=2),
              CLIPConfig(embed_dim=64, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=32,
                         vision_patch_size=None, transformer_width=128, transformer_heads=2, transformer_layers=2)):
        ref = _openai_reference(openai_clip, c, seed=0)
        ours = build_model(ref.state_dict())
        openai_clip.model.convert_weights(ref)
        convert_weights(ours, torch.float16)
        sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
        assert {k: v.dtype for k, v in sd_ref.items() if k in sd_ours} == {k: sd_ours[k].dtype for k in sd_ref if k in sd_ours}
        assert sd_ours["ln_final.weight"].dtype == torch.float32 and sd_ours["logit_scale"].dtype == torch.float32
        assert sd_ours["token_embedding.weight"].dtype == torch.float32 and sd_ours["text_projection"].dtype == torch.float16
        device = "cuda" if torch.cuda.is_available() else "cpu"
        ref, ours = ref.to(device), ours.to(device)
        torch.manual_seed(1)
        images = torch.randn(2, 3, 64, 64, device=device)
        text = openai_clip.tokenize(PROMPTS).to(device)
        with torch.no_grad():
            ri, oi = ref.encode_image(images.half()), ours.encode_image(images)
            rt, ot = ref.encode_text(text), ours.encode_text(text)
        assert oi.dtype == ri.dtype == torch.float16 and ot.dtype == rt.dtype == torch.float16
        # fp16 has 11 bits of mantissa: different but equally valid summation orders differ by ~1e-3
        assert rel_err(ri.float(), oi.float()) < 5e-3 and rel_err(rt.float(), ot.float()) < 5e-3


def _half_cosines(model, precision, n_px, n_images=1):
    """Min cosine between fp32 features and the same model converted as clip.load converts (CUDA if present)."""
    from zeroshot import tokenize
    from zeroshot.models.precision import convert_weights

    device = "cuda" if torch.cuda.is_available() else "cpu"
    half = convert_weights(copy.deepcopy(model), {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]).to(device)
    torch.manual_seed(2)
    images, text = torch.randn(n_images, 3, n_px, n_px), tokenize(PROMPTS[:2])
    with torch.no_grad():
        pairs = ((model.encode_image(images), half.encode_image(images.to(device))),
                 (model.encode_text(text), half.encode_text(text.to(device))))
    return [torch.nn.functional.cosine_similarity(a, b.float().cpu()).min().item() for a, b in pairs]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_features_stay_close_to_fp32(precision):
    """bf16/fp16 with LayerNorm in fp32: cosine to the fp32 features >= 0.999 on the real widths of ViT-B/32 and
    RN50 (depth cut to keep emulated half precision quick on CPUs without it; the full depth runs below)."""
    from zeroshot.models.clip import CLIPConfig

    vit = CLIPConfig(**{**ARCHITECTURES["ViT-B/32"].__dict__, "vision_layers": 2, "transformer_layers": 2})
    rn = CLIPConfig(**{**ARCHITECTURES["RN50"].__dict__, "vision_layers": (1, 1, 1, 1), "transformer_layers": 2})
    for config in (vit, rn):
        assert min(_half_cosines(random_model(config), precision, 224)) > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B/32", "RN50", "ViT-B/16", "ViT-L/14"])
def test_bf16_full_architectures(name):
    """The full architectures in bf16, through the CPU's fast paths (GEMM attention and patch embedding, the fused
    MLP, LayerNorm without round trips) where bf16 runs on the CPU: cosine to fp32 >= 0.999, images and text.
    Where bf16 is not native (no CUDA, no AVX512-BF16/AMX) torch emulates it, ~100x slower: a few images still
    check the numerics, and ViT-L/14 (155 GFLOP an image) waits for a machine with native bf16."""
    from zeroshot.models.precision import native_cpu_precision

    if name == "ViT-L/14" and not (torch.cuda.is_available() or native_cpu_precision("bf16")):
        pytest.skip("bf16 is emulated on this CPU: ViT-L/14 would take minutes")
    assert min(_half_cosines(random_model(ARCHITECTURES[name]), "bf16", 224, n_images=4)) > 0.999
