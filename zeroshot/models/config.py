"""Which CLIP a set of weights is: its CLIPConfig and its name.

Shapes give most of the architecture (widths, depths, patch size, resolution, vocabulary). They do not give
the head width, the pooling, the causal mask or the activation. Those come from the weights' own config
(open_clip's model_cfg, a `transformers` config.json) or, for a bare state dict, from the open_clip
architecture whose shapes match (zeroshot/reference/openclip_models.json, generated from open_clip's
registry by tools/make_openclip_tables.py). What neither says is assumed and reported, never silent.
"""
from __future__ import annotations

import functools
import json
from dataclasses import fields

import torch

from zeroshot.errors import ArchitectureError
from zeroshot.models.clip import CLIP, CLIPConfig
from zeroshot.models.registry import family_fields
from zeroshot.paths import REFERENCE

OPENCLIP_MODELS = REFERENCE / "openclip_models.json"

# Fields a state dict's shapes determine; the rest of CLIPConfig must be told or looked up.
SHAPE_FIELDS = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "vision_mlp_ratio",
                "vision_ln_pre", "vision_layer_scale", "context_length", "vocab_size", "transformer_width",
                "transformer_layers", "text_mlp_ratio", "text_proj_bias", "text_layer_scale", "logit_bias")
# Keys in OpenAI's archives that describe the model rather than parameterize it.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


@functools.lru_cache()
def openclip_models() -> dict[str, dict]:
    return json.loads(OPENCLIP_MODELS.read_text())


_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def hf_fields(config: dict) -> dict:
    """CLIPConfig fields from a `transformers` CLIPModel config.json."""
    tc, vc = config.get("text_config") or {}, config.get("vision_config") or {}
    act = {_HF_ACTIVATIONS.get(c.get("hidden_act", "quick_gelu")) for c in (tc, vc)}
    if None in act or len(act) > 1:
        raise ArchitectureError(f"unsupported activation in config.json: text {tc.get('hidden_act')!r}, vision {vc.get('hidden_act')!r}")
    eos = tc.get("eos_token_id", 2)
    vw, tw = vc.get("hidden_size", 768), tc.get("hidden_size", 512)
    return dict(
        embed_dim=config.get("projection_dim", 512),
        image_resolution=vc.get("image_size", 224),
        vision_layers=vc.get("num_hidden_layers", 12),
        vision_width=vw,
        vision_patch_size=vc.get("patch_size", 32),
        vision_head_width=vw // vc.get("num_attention_heads", 12),
        vision_mlp_ratio=vc.get("intermediate_size", 4 * vw) / vw,
        context_length=tc.get("max_position_embeddings", 77),
        vocab_size=tc.get("vocab_size", 49408),
        transformer_width=tw,
        transformer_heads=tc.get("num_attention_heads", 8),
        transformer_layers=tc.get("num_hidden_layers", 12),
        text_mlp_ratio=tc.get("intermediate_size", 4 * tw) / tw,
        # transformers' CLIP reads the highest id when eos_token_id is the legacy 2, else the first eos_token_id
        text_pool="argmax" if eos == 2 else "eos",
        eos_id=49407 if eos == 2 else eos,
        activation=act.pop(),
        ln_eps=vc.get("layer_norm_eps", 1e-5),
    )


def shape_fields(sd: dict[str, torch.Tensor]) -> dict:
    """The CLIPConfig fields an OpenAI-layout state dict's shapes determine."""
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})

    for key in ("text_projection", "token_embedding.weight", "positional_embedding", "ln_final.weight"):
        if key not in sd:
            raise ArchitectureError(f"no {key!r} tensor")
    f = {}
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        f.update(vision_layers=count("visual.transformer.resblocks."), vision_width=width, vision_patch_size=patch,
                 image_resolution=patch * grid,
                 vision_mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
                 vision_ln_pre="visual.ln_pre.weight" in sd,
                 vision_layer_scale="visual.transformer.resblocks.0.ls_1.gamma" in sd)
    elif "visual.attnpool.positional_embedding" in sd:
        out_grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        f.update(vision_layers=tuple(count(f"visual.layer{b}.") for b in (1, 2, 3, 4)),
                 vision_width=sd["visual.layer1.0.conv1.weight"].shape[0], vision_patch_size=None,
                 image_resolution=out_grid * 32, vision_mlp_ratio=4.0, vision_ln_pre=True, vision_layer_scale=False)
    else:
        raise ArchitectureError("no image tower: neither visual.proj (a ViT) nor visual.attnpool (a ResNet)")
    text_width = sd["ln_final.weight"].shape[0]
    f.update(embed_dim=sd["text_projection"].shape[1], context_length=sd["positional_embedding"].shape[0],
             vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=text_width,
             transformer_layers=count("transformer.resblocks."),
             text_mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
             text_proj_bias="text_projection_bias" in sd, text_layer_scale="transformer.resblocks.0.ls_1.gamma" in sd,
             logit_bias="logit_bias" in sd)
    return f


def _signature(f: dict) -> tuple:
    """The shape fields, with MLP ratios as the hidden widths they give (4.9231 and 8192/1664 are one width)."""
    hidden = {"vision_mlp_ratio": "vision_width", "text_mlp_ratio": "transformer_width"}
    return tuple(round(f[k] * f[hidden[k]]) if k in hidden else f[k] for k in SHAPE_FIELDS)


@functools.lru_cache()
def _known() -> dict[tuple, list[tuple[str, dict]]]:
    """open_clip's CLIP-family architectures by shape signature (names with and without -quickgelu share one)."""
    table: dict[tuple, list] = {}
    for name, cfg in openclip_models().items():
        f = family_fields(cfg)
        if f is not None:
            table.setdefault(_signature(f), []).append((name, f))
    return table


def base_name(arch: str) -> str:
    return arch.removesuffix("-quickgelu")


def match_known(shapes: dict) -> tuple[str | None, dict | None]:
    """(open_clip architecture name, its fields) for the shapes, or (None, None) when no known config has them."""
    candidates = _known().get(_signature(shapes))
    if not candidates:
        return None, None
    names = sorted({base_name(n) for n, _ in candidates}, key=lambda n: (len(n), n))
    return names[0], candidates[0][1]


def describe(c: CLIPConfig) -> str:
    """A readable name for an architecture no known config has."""
    if c.is_vit:
        vision = f"ViT width {c.vision_width}, {c.vision_layers} layers, patch {c.vision_patch_size}"
    else:
        vision = f"ResNet {'-'.join(map(str, c.vision_layers))} width {c.vision_width}"
    return (f"custom ({vision}, {c.image_resolution}px; text width {c.transformer_width}, "
            f"{c.transformer_layers} layers; embed {c.embed_dim})")


def architecture_name(c: CLIPConfig) -> str:
    name, _ = match_known({k: getattr(c, k) for k in SHAPE_FIELDS})
    return name or describe(c)


def build_config(sd: dict[str, torch.Tensor], told: dict | None = None) -> tuple[CLIPConfig, list[str]]:
    """The CLIPConfig of these weights, and what had to be assumed (empty when nothing was).

    `told` holds the fields a config that came with the weights gives (open_clip's model_cfg, a transformers
    config.json); shapes always win for what they determine. Otherwise the non-shape fields come from the
    open_clip architecture with the same shapes; with none, from OpenAI's conventions, and that is reported.
    The activation is never decided here: the caller passes it in `told` or records it as assumed.
    """
    shapes = shape_fields(sd)
    assumed: list[str] = []
    base = dict(told or {})
    if not told:
        _, known = match_known(shapes)
        if known is not None:
            base = {k: v for k, v in known.items() if k != "activation"}
        else:
            base = dict(vision_head_width=64, transformer_heads=max(1, shapes["transformer_width"] // 64))
            assumed.append("64-dim attention heads (OpenAI's), class-token and end-of-text pooling, causal text mask: "
                           "no known architecture has these shapes and the file has no config")
    names = {f.name for f in fields(CLIPConfig)}
    config = CLIPConfig(**{k: v for k, v in {**base, **shapes}.items() if k in names})
    check_heads(config)
    return config, assumed


def check_heads(c: CLIPConfig) -> None:
    width = c.vision_width if c.is_vit else c.vision_width * 32
    if width % c.vision_head_width or c.transformer_width % c.transformer_heads:
        raise ArchitectureError(f"head width {c.vision_head_width} does not divide the image tower's width {width}, "
                                f"or {c.transformer_heads} heads do not divide the text width {c.transformer_width}")


def build_model(state_dict: dict[str, torch.Tensor], told: dict | None = None) -> CLIP:
    """Build a CLIP in fp32 from an OpenAI-layout state dict (see build_config for where the config comes from)."""
    config, _ = build_config(state_dict, told)
    return load_weights(empty_model(config), state_dict)


class _NoRandomInit(torch.overrides.TorchFunctionMode):
    """Random initialization skipped: random factories give uninitialized memory (torch.empty, whose pages are
    never touched), random initializers leave a tensor as it is; the rest runs as ever (small fills and products)."""

    FACTORIES = {torch.randn, torch.rand}
    INITIALIZERS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.nn.init.normal_, torch.nn.init.uniform_,
                    torch.nn.init.trunc_normal_, torch.nn.init.xavier_uniform_, torch.nn.init.xavier_normal_,
                    torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_normal_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.INITIALIZERS:  # nn.init's functions pass the tensor by keyword
            return args[0] if args else kwargs["tensor"]
        if func in self.FACTORIES:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def empty_model(config: CLIPConfig) -> CLIP:
    """A CLIP whose tensors hold no values yet, for load_weights to replace every one of them: its random
    initialization would only be overwritten, and for a ViT-B/32 it costs about a second. (Not the meta device:
    torch's meta kernels for the products and normals in CLIP's constructor import torch._dynamo, 1.3 s.)"""
    with _NoRandomInit():
        model = CLIP(config)
    model._uninitialized = True
    return model


def load_weights(model: CLIP, state_dict: dict[str, torch.Tensor], where: str = "the checkpoint") -> CLIP:
    """load_state_dict(strict=True) in fp32, with an error that names the first tensor that does not fit.

    An empty_model (or one on the meta device) takes the tensors themselves (assign=True): no second copy of the
    weights; strict loading leaves none of its own uninitialized tensors behind."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items() if k not in METADATA_KEYS}
    expected = model.state_dict()
    for key in expected:
        # Some exporters drop BatchNorm's step counter; it plays no part in inference.
        if key.endswith("num_batches_tracked"):
            sd.setdefault(key, torch.zeros((), dtype=torch.long))
    for key, tensor in expected.items():
        if key not in sd:
            raise ArchitectureError(f"{where} has no tensor {key!r} that the {architecture_name(model.config)} "
                                    "architecture needs; the config does not match these weights")
        if sd[key].shape != tensor.shape:
            raise ArchitectureError(f"{where}'s tensor {key!r} has shape {tuple(sd[key].shape)} but the "
                                    f"{architecture_name(model.config)} architecture needs {tuple(tensor.shape)}; "
                                    "the config does not match these weights")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise ArchitectureError(f"{where} has {len(extra)} tensor(s) this architecture does not use, first {extra[0]!r}; "
                                "the config does not match these weights")
    assign = model.__dict__.pop("_uninitialized", False) or any(t.is_meta for t in expected.values())
    model.load_state_dict(sd, strict=True, assign=assign)
    if assign and not model.config.is_vit:  # assigned tensors keep their own layout; the ResNet runs channels_last
        model.visual.to(memory_format=torch.channels_last)
    return model.eval()
