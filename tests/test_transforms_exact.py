"""zeroshot's own preprocessing steps (models/transforms.py) and image-folder listing (data/listing.py) against the
torchvision code they replace, bit for bit: every resize mode and interpolation, odd sizes, other mean/std, small
images (upsampling) and big ones (downsampling, extreme aspect), every PIL mode users feed in; and an image-folder
eval that ends without torchvision imported, with the logits the torchvision transform gives."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli, make_cfg, shared_path
from datagen import write_imagefolder
from zeroshot.models.transforms import INTERPOLATIONS, RESIZE_MODES, Preprocess, To8Bit, ToRGB, image_transform


class _Longest:
    """The old `ResizeLongest` + `PadToSquare`, with torchvision's functional resize and pad."""

    def __init__(self, size, mode):
        self.size, self.mode = size, mode

    def __call__(self, image):
        from torchvision.transforms import functional as TF

        w, h = image.size
        scale = self.size / max(w, h)
        image = TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))], self.mode)
        w, h = image.size
        left, top = (self.size - w) // 2, (self.size - h) // 2
        return TF.pad(image, [left, top, self.size - w - left, self.size - h - top], fill=0)


def torchvision_transform(p: Preprocess):
    """What image_transform built before it stopped importing torchvision: torchvision's Compose of its steps."""
    from torchvision import transforms as T

    mode = T.InterpolationMode(p.interpolation)
    resize = {"shortest": [T.Resize(p.size, interpolation=mode), T.CenterCrop(p.size)],
              "squash": [T.Resize((p.size, p.size), interpolation=mode)],
              "longest": [_Longest(p.size, mode)]}[p.resize_mode]
    return T.Compose([To8Bit(), *resize, ToRGB(), T.ToTensor(), T.Normalize(p.mean, p.std)])


def real_photo(size: tuple[int, int]) -> Image.Image:
    """A real photo at `size` (w, h): CIFAR-10 JPEGs tiled and upscaled, so a big image has real content."""
    files = sorted(shared_path("data", "cifar10-test").glob("*/*.jpg"))[:16]
    tiles = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    mosaic = np.concatenate([np.concatenate(tiles[r * 4:(r + 1) * 4], axis=1) for r in range(4)], axis=0)  # 128 x 128
    return Image.fromarray(mosaic).resize(size, Image.Resampling.BICUBIC)


def sample_images() -> list[tuple[str, Image.Image]]:
    files = sorted(shared_path("data", "cifar10-test").glob("*/*.jpg"))
    small = [(f"cifar {f.name}", Image.open(f)) for f in files[::2500][:3]]  # 32 x 32 JPEGs: upsampling
    photo = real_photo((500, 375))
    rng = np.random.default_rng(0)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (375, 500), dtype=np.uint8)))
    gray16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    return small + [
        ("500x375", photo), ("375x500", real_photo((375, 500))), ("1000x1000", real_photo((1000, 1000))),
        ("4000x300", real_photo((4000, 300))), ("300x4000", real_photo((300, 4000))), ("odd 225x223", real_photo((225, 223))),
        ("227x224", real_photo((227, 224))), ("224x231", real_photo((224, 231))),  # crop offsets x.5: round half to even
        ("tiny 7x9", real_photo((7, 9))), ("L", photo.convert("L")), ("1", photo.convert("1")), ("LA", photo.convert("LA")),
        ("P", photo.convert("P", palette=Image.Palette.ADAPTIVE)), ("small P", real_photo((40, 30)).convert("P")),
        ("RGBA", rgba), ("CMYK", photo.convert("CMYK")), ("YCbCr", photo.convert("YCbCr")),
        ("I;16", Image.fromarray(gray16)), ("I", photo.convert("I")), ("F", photo.convert("F")),
        ("F [0, 1]", Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255)),
    ]


@pytest.fixture(scope="module")
def images():
    out = sample_images()
    for _, image in out:
        image.load()
    return out


def assert_same(p: Preprocess, images):
    ours, ref = image_transform(p), torchvision_transform(p)
    for name, image in images:
        a, b = ours(image.copy()), ref(image.copy())
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (3, p.size, p.size), (name, p)
        assert torch.equal(a, b), (name, p, (a - b).abs().max().item())


@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_mode_and_filter_is_torchvisions_bit_for_bit(images, resize_mode, interpolation):
    assert_same(Preprocess(size=224, interpolation=interpolation, resize_mode=resize_mode), images)


@pytest.mark.parametrize("size", [336, 97, 32])
@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
def test_other_sizes_and_mean_std_are_torchvisions_bit_for_bit(images, size, resize_mode):
    p = Preprocess(size=size, mean=[0.5, 0.25, 0.125], std=[0.3, 0.7, 0.11], resize_mode=resize_mode)
    assert_same(p, images[::2])


def test_center_crop_pads_and_rounds_as_torchvision(images):
    """CenterCrop alone (in the pipeline the resize never leaves a side short): padding of images smaller than the
    window, odd and even differences, every mode."""
    from torchvision import transforms as T

    from zeroshot.models.transforms import CenterCrop

    for name, image in images:
        if image.mode in ("I;16", "I", "F"):
            continue  # the pipeline brings these to 8 bits first
        for size in (5, 8, 31, 226, 501, 1002):
            a, b = CenterCrop(size)(image), T.CenterCrop(size)(image)
            assert a.size == b.size == (size, size) and a.mode == b.mode, (name, size)
            assert a.tobytes() == b.tobytes() and a.getpalette() == b.getpalette(), (name, size)


def test_steps_keep_their_settings_in_repr():
    """The feature cache keys on repr(transform); a built transform is a plain object with `.transforms`."""
    t = image_transform(Preprocess(size=97, interpolation="lanczos", resize_mode="shortest"))
    text = repr(t)
    assert "97" in text and "lanczos" in text and "shorter side" in text and "0.26862954" in text
    assert [type(s).__name__ for s in t.transforms] == ["To8Bit", "Resize", "CenterCrop", "ToRGB", "ToTensor", "Normalize"]
    squash = repr(image_transform(Preprocess(size=97, interpolation="lanczos", resize_mode="squash")))
    assert squash != text and "both sides" in squash
    x = torch.rand(3, 4, 4)
    before = x.clone()
    t.transforms[-1](x)
    assert torch.equal(x, before)  # Normalize leaves its input as it is


def test_image_folder_is_torchvisions(tmp_path):
    """Our ImageFolder: torchvision's classes, class_to_idx, samples, targets, extensions and loaded pixels."""
    import torchvision.datasets as tvd

    from zeroshot.data.listing import IMG_EXTENSIONS, ImageFolder, load_rgb

    assert IMG_EXTENSIONS == tvd.folder.IMG_EXTENSIONS
    root = write_imagefolder(tmp_path / "f", ["b", "a", "c d"], per_class=2)
    (root / "a" / "nested").mkdir()
    real_photo((60, 40)).convert("P").save(root / "a" / "nested" / "x.GIF")  # not an extension either lists
    real_photo((60, 40)).convert("L").save(root / "a" / "nested" / "y.JPEG")
    real_photo((60, 40)).convert("RGBA").save(root / "c d" / "z.webp")
    (root / "b" / "notes.txt").write_text("not an image")
    ours, ref = ImageFolder(str(root)), tvd.ImageFolder(str(root))
    assert ours.classes == ref.classes and ours.class_to_idx == ref.class_to_idx
    assert ours.samples == ref.samples and ours.targets == ref.targets and ours.imgs == ref.imgs and len(ours) == len(ref)
    for i in range(len(ref)):
        (a, ya), (b, yb) = ours[i], ref[i]
        assert ya == yb and a.mode == b.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b)), ours.samples[i]
        assert np.array_equal(np.asarray(load_rgb(ours.samples[i][0])), np.asarray(b))
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(tmp_path / "f" / "a" / "nested"))  # no class folders: torchvision's error too


# An image-folder `eval` in-process, then whether torchvision was imported; its logits are in the run directory
RUNNER = ("import sys\n"
          "from zeroshot.__main__ import main\n"
          "code = main(sys.argv[1:])\n"
          "print('TORCHVISION', 'torchvision' in sys.modules, flush=True)\n"
          "sys.exit(code)\n")


@pytest.mark.cli
def test_an_image_folder_eval_imports_no_torchvision_and_gives_torchvisions_logits(tmp_path, tiny_checkpoint,
                                                                                  monkeypatch):
    import zeroshot.models.loader
    from zeroshot.commands.evaluate import evaluate

    root = write_imagefolder(tmp_path / "folder", ["apple", "bus", "cat"], per_class=2, size=48)
    overrides = ["dataset=imagefolder", f"dataset.root={root}", f"model.checkpoint={tiny_checkpoint}",
                 "num_workers=0", "progress=false", "batch_size=4", 'prompts.templates=["a photo of a {}."]']
    r = cli("eval", *overrides, f"cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'results'}", code=RUNNER)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "TORCHVISION False", r.stdout[-2000:]
    ours = np.load(next((tmp_path / "results").rglob("logits.npz")))

    # the same eval in this process, its model's transform torchvision's Compose (what image_transform built before)
    monkeypatch.setattr(zeroshot.models.loader, "image_transform", torchvision_transform)
    cfg = make_cfg("eval", *overrides, f"cache_dir={tmp_path / 'cache_tv'}", f"results_dir={tmp_path / 'results_tv'}")
    m = evaluate(cfg)
    ref = np.load(Path(m["run_dir"]) / "logits.npz")
    assert ours["logits"].shape == ref["logits"].shape == (6, 3) and np.array_equal(ours["labels"], ref["labels"])
    # equal here; a tolerance because the two processes may pick their CPU kernels apart (the pixels are compared
    # bit for bit above)
    np.testing.assert_allclose(ours["logits"], ref["logits"], rtol=1e-6, atol=1e-6)
    assert json.loads((Path(m["run_dir"]) / "metrics.json").read_text())["n_images"] == 6
