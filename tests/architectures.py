"""The nine released OpenAI architectures (QuickGELU, 64-dim heads), by OpenAI's names: test fixtures.

zeroshot itself reads every architecture from the weights (zeroshot/models/config.py); these literal configs
are what the tests hold its inference and the reference code against."""
from zeroshot.models.clip import CLIPConfig


def _text(width: int, heads: int) -> dict:
    return dict(transformer_width=width, transformer_heads=heads, transformer_layers=12)


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
