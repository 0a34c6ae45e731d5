"""OpenAI CLIP's image preprocessing: bicubic resize of the shorter side, center crop, RGB, normalize."""
from __future__ import annotations

import numpy as np
from PIL import Image
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATION = "bicubic"


def to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def to_8bit(image: Image.Image) -> Image.Image:
    """Bring 16-bit and float images into 8-bit L before any resizing.

    PIL's convert("RGB") clips 16-bit values at 255 (a 16-bit scan turns white); scaling by the
    type's range keeps the picture. 8-bit modes pass through untouched, so they match OpenAI exactly.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F" and array.max() <= 1.0:
            peak = 1.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image


def image_transform(n_px: int) -> T.Compose:
    """The exact order matters for parity: resize and crop in the image's own mode, then convert to RGB."""
    return T.Compose(
        [
            T.Lambda(to_8bit),
            T.Resize(n_px, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(n_px),
            T.Lambda(to_rgb),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def preprocess_spec(n_px: int) -> dict:
    """What the feature cache keys on: everything that changes the pixels the model sees."""
    return {"resolution": n_px, "interpolation": INTERPOLATION, "mean": list(MEAN), "std": list(STD)}
