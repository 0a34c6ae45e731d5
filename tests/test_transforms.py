"""Preprocessing is OpenAI's, pixel for pixel, on real images and on every PIL mode users feed in."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from zeroshot.models.transforms import MEAN, STD, image_transform
from conftest import shared_path


def synthetic_images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (97, 143, 3), dtype=np.uint8))
    yield "RGB", rgb
    yield "L", rgb.convert("L")
    yield "P", rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (97, 143), dtype=np.uint8)))
    yield "RGBA", rgba
    yield "CMYK", rgb.convert("CMYK")
    yield "tall", Image.fromarray(rng.integers(0, 256, (300, 40, 3), dtype=np.uint8))
    yield "tiny", Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))


@pytest.mark.parametrize("n_px", [224, 336])
def test_matches_openai_on_synthetic_modes(openai_clip, n_px):
    ours, ref = image_transform(n_px), openai_clip.clip._transform(n_px)
    for mode, image in synthetic_images():
        a, b = ours(image), ref(image)
        assert a.shape == (3, n_px, n_px), mode
        assert torch.equal(a, b), mode


def test_matches_openai_on_real_images(openai_clip):
    root = shared_path("data", "cifar10-test")
    files = sorted(root.glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    ours, ref = image_transform(224), openai_clip.clip._transform(224)
    for path in files[:20]:
        with Image.open(path) as im:
            assert torch.equal(ours(im), ref(im)), path


def test_matches_openai_on_real_mnist_grayscale(openai_clip):
    import gzip

    raw = gzip.open(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz")).read()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    ours, ref = image_transform(224), openai_clip.clip._transform(224)
    for i in range(5):
        im = Image.fromarray(pixels[i], mode="L")
        assert torch.equal(ours(im), ref(im))


def test_16bit_is_scaled_not_clipped():
    """PIL's convert('RGB') would saturate 16-bit values at 255; we scale them by the type's range."""
    mid = Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16))
    assert mid.mode.startswith("I;16")
    x = image_transform(32)(mid)
    pixel = x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    assert torch.allclose(pixel, torch.full_like(pixel, 128 / 255), atol=1 / 255)


@pytest.mark.parametrize("resize_mode,interpolation", [("shortest", "bicubic"), ("squash", "bicubic"),
                                                       ("longest", "bicubic"), ("shortest", "bilinear")])
def test_matches_open_clip_preprocessing_modes(open_clip, resize_mode, interpolation):
    """Preprocessing from a checkpoint's config: open_clip's eval transform for each resize mode, pixel for pixel."""
    from open_clip.transform import image_transform as oc_transform

    from zeroshot.models.transforms import Preprocess

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    ours = image_transform(Preprocess(size=96, mean=mean, std=std, interpolation=interpolation, resize_mode=resize_mode))
    ref = oc_transform(96, is_train=False, mean=mean, std=std, resize_mode=resize_mode, interpolation=interpolation)
    for mode, image in synthetic_images():
        a, b = ours(image), ref(image)
        assert a.shape == b.shape == (3, 96, 96), mode
        assert (a - b).abs().max() < 1e-6, (mode, (a - b).abs().max())


def test_transform_repr_names_every_setting():
    """The feature cache keys on repr(transform): each setting must show in it."""
    from zeroshot.models.transforms import Preprocess

    base = repr(image_transform(Preprocess(size=224)))
    for change in ({"size": 256}, {"mean": [0.5, 0.5, 0.5]}, {"std": [0.2, 0.2, 0.2]}, {"interpolation": "bilinear"},
                   {"resize_mode": "squash"}):
        assert repr(image_transform(Preprocess(**{"size": 224, **change}))) != base, change
