"""The CLIP model: a text transformer and one of two image towers, with OpenAI's parameter names.

Every parameter has the name and shape it has in OpenAI's checkpoints (and in open_clip's CLIP-family ones,
which extend that layout), so `load_state_dict(strict=True)` takes a real checkpoint. Everything that varies
across the CLIP family (activation, head width, MLP ratio, LayerNorm eps, pooling, causal mask, projection
bias, LayerScale, logit bias) is a field of one `CLIPConfig`, passed whole; the forward pass reads it as data.
Internally the transformers (zeroshot/models/layers.py) run batch-first ([N, L, D]) and attention goes through
`F.scaled_dot_product_attention` (or, in bf16 on the CPU, its GEMM form), while the weights keep
nn.MultiheadAttention's in_proj/out_proj layout.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zeroshot.models.layers import (
    BlockSpec,
    LayerNorm,
    Transformer,
    attention,
    conv_bn,
    half_on_cpu,
    patch_embed_by_gemm,
)


@dataclass
class CLIPConfig:
    embed_dim: int = 512
    # vision: an int `vision_layers` means a ViT, a 4-tuple means a ModifiedResNet
    image_resolution: int = 224
    vision_layers: int | tuple[int, int, int, int] = 12
    vision_width: int = 768
    vision_patch_size: int | None = 32
    vision_head_width: int = 64  # OpenAI's are 64; open_clip's ViT-H/g/bigG/e use 80/88/104/112
    vision_mlp_ratio: float = 4.0
    vision_ln_pre: bool = True  # open_clip's no_ln_pre=True (CLIPA) drops it
    vision_pool: str = "tok"  # "tok": the class token's output; "avg": the mean of the patch tokens
    vision_ln_after_pool: bool = False  # open_clip's final_ln_after_pool: ln_post on the pooled vector
    vision_layer_scale: bool = False  # LayerScale (ls_1.gamma, ls_2.gamma) in every block
    # text
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    text_mlp_ratio: float = 4.0
    text_pool: str = "argmax"  # argmax: the highest id (CLIP's end-of-text) | eos: first `eos_id` | first | last
    text_causal: bool = True  # False for CLIPA's bidirectional text tower
    text_proj_bias: bool = False
    text_layer_scale: bool = False
    eos_id: int = 49407
    # both towers
    activation: str = "quick_gelu"  # quick_gelu (OpenAI's) | gelu (open_clip's default) | gelu_tanh
    ln_eps: float = 1e-5
    logit_bias: bool = False  # a learned scalar added to the logits (SigLIP-style training)

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)

    @property
    def vision_heads(self) -> int:
        # the ResNet's attention pool works on width * 32 channels
        return (self.vision_width if self.is_vit else self.vision_width * 32) // self.vision_head_width


class VisionTransformer(nn.Module):
    def __init__(self, c: CLIPConfig):
        super().__init__()
        width, patch = c.vision_width, c.vision_patch_size
        self.input_resolution = c.image_resolution
        self.pool, self.ln_after_pool = c.vision_pool, c.vision_ln_after_pool
        grid = c.image_resolution // patch
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width, eps=c.ln_eps) if c.vision_ln_pre else nn.Identity()
        self.transformer = Transformer(BlockSpec(width, c.vision_layers, c.vision_heads, c.vision_mlp_ratio,
                                                 c.activation, c.ln_eps, c.vision_layer_scale))
        self.ln_post = LayerNorm(width, eps=c.ln_eps)
        self.proj = nn.Parameter(scale * torch.randn(width, c.embed_dim))

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The patch embedding, [N, 3, R, R] -> [N, grid*grid, width].

        A stride-p conv with a p x p kernel is one GEMM over the image cut into patches. In bf16/fp16 on the
        CPU oneDNN's convolution runs it 20-30% slower than one reordering copy and the GEMM; in fp32 the two
        tie, and the convolution stays.
        """
        w = self.conv1.weight  # [width, 3, p, p]
        if half_on_cpu(x) and x.shape[-1] == x.shape[-2] and x.shape[-1] % w.shape[-1] == 0:
            return patch_embed_by_gemm(x, w)
        return self.conv1(x).flatten(2).transpose(1, 2)  # [N, width, grid, grid] -> [N, grid*grid, width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [N, 1, width]
        x = torch.cat([cls, x], dim=1)  # [N, grid*grid + 1, width]
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        if self.pool == "tok":  # only the class token is read out, so the last block computes only it
            cls = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            x = self.ln_post(self.transformer(x, readout=cls))  # [N, width]
        else:  # "avg": the mean of the patch tokens, normalized per token or (ln_after_pool) once pooled
            x = self.transformer(x)[:, 1:]  # [N, grid*grid, width]
            x = self.ln_post(x.mean(dim=1)) if self.ln_after_pool else self.ln_post(x).mean(dim=1)  # [N, width]
        return x @ self.proj  # [N, embed_dim]


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
        if self.downsample is None:
            identity = x
        else:  # avgpool, conv, BatchNorm
            pool, conv, bn = self.downsample
            identity = conv_bn(conv, bn, pool(x))
        out = conv_bn(self.conv1, self.bn1, x, relu=True)  # relu1, relu2: in the epilogue
        out = conv_bn(self.conv2, self.bn2, out, relu=True)
        return conv_bn(self.conv3, self.bn3, self.avgpool(out), relu=True, residual=identity)  # relu3(bn3 + identity)


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
        x = attention(q, k, v)  # [N, heads, 1, C/heads]
        x = x.transpose(1, 2).reshape(n, c)  # [N, C]
        return self.c_proj(x)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: a 3-conv stem with avgpool, anti-aliased strides, and attention pooling at the end."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        width = c.vision_width
        self.input_resolution = c.image_resolution
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
        self.layer1 = self._make_layer(width, c.vision_layers[0])
        self.layer2 = self._make_layer(width * 2, c.vision_layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, c.vision_layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, c.vision_layers[3], stride=2)
        self.attnpool = AttentionPool2d(c.image_resolution // 32, width * 32, c.vision_heads, c.embed_dim)
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
        x = conv_bn(self.conv1, self.bn1, x, relu=True)  # [N, width/2, R/2, R/2] (relu1-3 in the epilogue)
        x = conv_bn(self.conv2, self.bn2, x, relu=True)
        x = conv_bn(self.conv3, self.bn3, x, relu=True)  # [N, width, R/2, R/2]
        x = self.avgpool(x)  # [N, width, R/4, R/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, width*32, R/32, R/32]
        return self.attnpool(x)  # [N, output_dim]


# Where the text feature is read out, per CLIPConfig.text_pool: tokens [N, L] -> positions [N].
TEXT_READOUT = {
    "argmax": lambda text, eos: text.argmax(dim=-1),  # CLIP's end-of-text has the highest id
    "eos": lambda text, eos: (text == eos).int().argmax(dim=-1),  # the first end-of-sequence id
    "first": lambda text, eos: torch.zeros(len(text), dtype=torch.long, device=text.device),
    "last": lambda text, eos: torch.full((len(text),), text.shape[1] - 1, dtype=torch.long, device=text.device),
}


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = c = config
        self.context_length = c.context_length
        self.visual = VisionTransformer(c) if c.is_vit else ModifiedResNet(c)
        self.transformer = Transformer(BlockSpec(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                                 c.text_mlp_ratio, c.activation, c.ln_eps, c.text_layer_scale, c.text_causal))
        self.vocab_size = c.vocab_size
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width, eps=c.ln_eps)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.text_projection_bias = nn.Parameter(torch.zeros(c.embed_dim)) if c.text_proj_bias else None
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.zeros([])) if c.logit_bias else None
        # Positions after the readout never reach it under a causal mask, so a batch is cut after its
        # last readout; "last" reads the final position, which sees all of them.
        self.trim_text = c.text_causal and c.text_pool != "last"
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
        """Features read out at one position per prompt (config.text_pool) after the text transformer.

        Under a causal mask a position never sees the positions after it, so the padding after the last
        readout in the batch is cut before the transformer runs, and the last block computes only the
        readout positions: same features, a fraction of the work.
        """
        readout = TEXT_READOUT[self.config.text_pool](text, self.config.eos_id)  # [N]
        if self.trim_text and not torch.compiler.is_compiling():  # a traced graph keeps one shape: no cut
            text = text[:, : int(readout.max()) + 1]  # [N, L]
        x = self.token_embedding(text).to(self.dtype)  # [N, L, D]
        x = x + self.positional_embedding[: text.shape[1]].to(self.dtype)
        x = self.ln_final(self.transformer(x, readout=readout))  # [N, D], the readout positions
        x = x @ self.text_projection.to(x.dtype)  # [N, embed_dim]
        return x if self.text_projection_bias is None else x + self.text_projection_bias.to(x.dtype)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (image x text, and its transpose), as in OpenAI's CLIP.forward."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.t()
