"""The CLIP model: a text transformer and one of two image towers, with OpenAI's parameter names.

Every parameter has the name and shape it has in OpenAI's checkpoints, so `load_state_dict(strict=True)`
takes a real checkpoint. Internally the transformers run batch-first ([N, L, D]) and attention goes through
`F.scaled_dot_product_attention`, while the weights keep nn.MultiheadAttention's in_proj/out_proj layout.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CLIPConfig:
    embed_dim: int = 512
    # vision: an int `vision_layers` means a ViT, a 4-tuple means a ModifiedResNet
    image_resolution: int = 224
    vision_layers: int | tuple[int, int, int, int] = 12
    vision_width: int = 768
    vision_patch_size: int | None = 32
    # text
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)

    @property
    def vision_heads(self) -> int:
        # OpenAI uses 64-dim heads; the ResNet's attention pool works on width * 32 channels
        return self.vision_width // 64 if self.is_vit else self.vision_width * 32 // 64


def _text(width: int, heads: int) -> dict:
    return dict(transformer_width=width, transformer_heads=heads, transformer_layers=12)


# The nine released OpenAI architectures.
ARCHITECTURES: dict[str, CLIPConfig] = {
    "RN50": CLIPConfig(1024, 224, (3, 4, 6, 3), 64, None, **_text(512, 8)),
    "RN101": CLIPConfig(512, 224, (3, 4, 23, 3), 64, None, **_text(512, 8)),
    "RN50x4": CLIPConfig(640, 288, (4, 6, 10, 6), 80, None, **_text(640, 10)),
    "RN50x16": CLIPConfig(768, 384, (6, 8, 18, 8), 96, None, **_text(768, 12)),
    "RN50x64": CLIPConfig(1024, 448, (3, 15, 36, 10), 128, None, **_text(1024, 16)),
    "ViT-B/32": CLIPConfig(512, 224, 12, 768, 32, **_text(512, 8)),
    "ViT-B/16": CLIPConfig(512, 224, 12, 768, 16, **_text(512, 8)),
    "ViT-L/14": CLIPConfig(768, 224, 24, 1024, 14, **_text(768, 12)),
    "ViT-L/14@336px": CLIPConfig(768, 336, 24, 1024, 14, **_text(768, 12)),
}


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always normalizes in fp32, so fp16/bf16 models keep OpenAI's numerics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that CLIP was trained with; exact GELU would change the features.

    x * sigmoid(1.702 x) = silu(1.702 x) / 1.702. Without autograd the identity runs in place on the
    [N, L, 4D] activation: three passes and no allocations instead of three new tensors (a tenth of ViT time).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        return F.silu(x.mul_(1.702), inplace=True).div_(1.702)


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (in_proj_weight, out_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * width, width)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, l, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [N, L, 3D]
        qkv = qkv.view(n, l, 3, self.heads, d // self.heads)  # [N, L, 3, H, D/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [N, H, L, D/H]
        x = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [N, H, L, D/H]
        x = x.transpose(1, 2).reshape(n, l, d)  # [N, L, D]
        return self.out_proj(x)

    def attend_from(self, x: torch.Tensor, query: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Attention output at one position per sequence (`query` [N]); keys and values from all of `x`.

        The last block only has to produce the feature that is read out (CLS or end-of-text), so it
        projects one query per sequence instead of L. Same numbers, a fraction of the block's work.
        """
        n, l, d = x.shape
        h = self.heads
        rows = torch.arange(n, device=x.device)
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(x[rows, query], w[:d], b[:d]).view(n, h, 1, d // h)  # [N, H, 1, D/H]
        kv = F.linear(x, w[d:], b[d:]).view(n, l, 2, h, d // h)  # [N, L, 2, H, D/H]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x [N, H, L, D/H]
        mask = None
        if causal:  # the query at position p sees keys 0..p
            mask = (torch.arange(l, device=x.device)[None, :] <= query[:, None]).view(n, 1, 1, l)  # [N, 1, 1, L]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, H, 1, D/H]
        return self.out_proj(x.reshape(n, d))  # [N, D]


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(), c_proj=nn.Linear(width * 4, width))
        )
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))

    def forward_at(self, x: torch.Tensor, query: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The block's output at one position per sequence: [N, L, D] -> [N, D]."""
        y = x[torch.arange(x.shape[0], device=x.device), query]  # [N, D]
        y = y + self.attn.attend_from(self.ln_1(x), query, causal)
        return y + self.mlp(self.ln_2(y))


class Transformer(nn.Module):
    """A stack of pre-LN blocks over batch-first input [N, L, D]; `causal` masks future positions (text)."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False):
        super().__init__()
        self.width, self.layers, self.causal = width, layers, causal
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, readout: torch.Tensor | None = None) -> torch.Tensor:
        """[N, L, D] -> [N, L, D]; or, given `readout` positions [N], only those outputs: [N, D]."""
        blocks = list(self.resblocks)
        last = blocks.pop() if readout is not None else None
        for block in blocks:
            x = block(x, causal=self.causal)
        return x if last is None else last.forward_at(x, readout, causal=self.causal)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        grid = input_resolution // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [N, 1, width]
        x = torch.cat([cls, x], dim=1)  # [N, grid*grid + 1, width]
        x = x + self.positional_embedding.to(x.dtype)
        cls = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = self.transformer(self.ln_pre(x), readout=cls)  # [N, width], the class token's output
        return self.ln_post(x) @ self.proj  # [N, output_dim]


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased downsampling: stride is an avgpool after the 3x3, not a strided conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # The keys "-1", "0", "1" are the checkpoint's names for this shortcut.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map by letting its mean attend over all positions (plus a learned position embedding)."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        h = self.num_heads
        x = x.flatten(2).transpose(1, 2)  # [N, HW, C] (a free view when x is channels_last)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [N, HW + 1, C]
        x = x + self.positional_embedding.to(x.dtype)
        q = self.q_proj(x[:, :1]).view(n, 1, h, c // h).transpose(1, 2)  # [N, heads, 1, C/heads]
        k = self.k_proj(x).view(n, -1, h, c // h).transpose(1, 2)  # [N, heads, HW + 1, C/heads]
        v = self.v_proj(x).view(n, -1, h, c // h).transpose(1, 2)  # [N, heads, HW + 1, C/heads]
        x = F.scaled_dot_product_attention(q, k, v)  # [N, heads, 1, C/heads]
        x = x.transpose(1, 2).reshape(n, c)  # [N, C]
        return self.c_proj(x)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: a 3-conv stem with avgpool, anti-aliased strides, and attention pooling at the end."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int, input_resolution: int, width: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)
        self.to(memory_format=torch.channels_last)  # conv weights in NHWC order too; values are unchanged

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(Bottleneck(self._inplanes, planes, stride if i == 0 else 1))
            self._inplanes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last (NHWC) convolutions are ~1.3x faster on CPU (oneDNN) and use tensor cores on GPU
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu1(self.bn1(self.conv1(x)))  # [N, width/2, R/2, R/2]
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))  # [N, width, R/2, R/2]
        x = self.avgpool(x)  # [N, width, R/4, R/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, width*32, R/32, R/32]
        return self.attnpool(x)  # [N, output_dim]


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = c = config
        self.context_length = c.context_length
        if c.is_vit:
            self.visual = VisionTransformer(
                c.image_resolution, c.vision_patch_size, c.vision_width, c.vision_layers, c.vision_heads, c.embed_dim
            )
        else:
            self.visual = ModifiedResNet(
                tuple(c.vision_layers), c.embed_dim, c.vision_heads, c.image_resolution, c.vision_width
            )
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads, causal=True)
        self.vocab_size = c.vocab_size
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """CLIP's initialization: small normals scaled by width and depth, so a random model's features are sane."""
        c = self.config
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for name, param in self.visual.named_parameters():
                if name.endswith("bn3.weight"):  # each residual branch starts as identity
                    nn.init.zeros_(param)
        width, layers = c.transformer_width, c.transformer_layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_resolution(self) -> int:
        return self.config.image_resolution

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.dtype))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Features of the end-of-text token (the highest id in each row) after the causal transformer.

        Under the causal mask a position never sees the positions after it, so the padding after the last
        end-of-text in the batch is cut before the transformer runs, and the last block computes only the
        end-of-text outputs: same features, a fraction of the work.
        """
        eot = text.argmax(dim=-1)  # [N]
        length = int(eot.max()) + 1
        x = self.token_embedding(text[:, :length]).to(self.dtype)  # [N, L, D]
        x = x + self.positional_embedding[:length].to(self.dtype)
        x = self.ln_final(self.transformer(x, readout=eot))  # [N, D], the end-of-text outputs
        return x @ self.text_projection.to(x.dtype)  # [N, embed_dim]

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (image x text, and its transpose), as in OpenAI's CLIP.forward."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


# Keys in OpenAI's archives that describe the model rather than parameterize it.
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> CLIPConfig:
    """Infer the architecture from parameter shapes, the way OpenAI's build_model does."""
    sd = state_dict

    def count(prefix: str, depth: int) -> int:
        return len({k.split(".")[depth] for k in sd if k.startswith(prefix)})

    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        layers: int | tuple = sum(1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight"))
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = patch * grid
    else:
        layers = tuple(count(f"visual.layer{b}.", 2) for b in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        patch = None
        out_grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = out_grid * 32
    text_width = sd["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=resolution,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=text_width,
        transformer_heads=text_width // 64,
        transformer_layers=count("transformer.resblocks.", 2),
    )


def build_model(state_dict: dict[str, torch.Tensor]) -> CLIP:
    """Build a CLIP in fp32 from an OpenAI-layout state dict, inferring the architecture from its shapes."""
    state_dict = {k: v for k, v in state_dict.items() if k not in _METADATA_KEYS}
    model = CLIP(config_from_state_dict(state_dict))
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    for key, buffer in model.state_dict().items():
        # Some exporters drop BatchNorm's step counter; it plays no part in inference.
        if key.endswith("num_batches_tracked"):
            state_dict.setdefault(key, buffer)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
