"""Image preprocessing: resize, crop, RGB, normalize, with the settings each checkpoint was trained with.

OpenAI's CLIP uses bicubic resize of the shorter side, center crop, RGB, and its mean/std; open_clip's
checkpoints can say otherwise (mean/std, interpolation, and resize mode: `shortest` + center crop,
`squash` to a square, or `longest` + pad). Every step is an object with a descriptive repr, because the
feature cache keys on `repr(transform)`: the transform that actually runs, not a hand-written summary.

The steps are torchvision's (Resize, CenterCrop, ToTensor, Normalize, in a Compose), written here with PIL and
torch so that an eval imports no torchvision (1-2.6 s of start-up): the same output sizes, crop offsets, padding,
PIL filters and float32 arithmetic, so the same tensors bit for bit (tests/test_transforms.py compares them with
torchvision's Compose on every setting and PIL mode). A model's transform is still a `LazyTransform`, built when
the first image is decoded, and the repr the cache keys on is remembered (per settings and this file) so that a
run on cached features builds none.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
import numpy as np
from PIL import Image, ImageOps

from zeroshot.errors import ConfigError
from zeroshot.files import atomic_write, package_version
from zeroshot.models.registry import OPENAI_PREPROCESS
from zeroshot.paths import default_cache_dir

MEAN, STD = tuple(OPENAI_PREPROCESS["mean"]), tuple(OPENAI_PREPROCESS["std"])
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")  # torchvision's InterpolationMode, by value
# The PIL filter each one names (torchvision's pil_modes_mapping)
PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
               "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
RESIZE_MODES = ("shortest", "squash", "longest")


MAX_IMAGE_SIZE = 4096  # the largest inputs of the CLIP family are ~1024 px (SigLIP so400m: 512, EVA: 448)


def square_size(value, where: str) -> int:
    """An image size as open_clip writes it: an int, or [H, W] (its PreprocessCfg allows a pair). Only square
    inputs are supported, as every CLIP-family tower here has a square positional grid."""
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and value[0] == value[1]:
            value = value[0]
        else:
            raise ConfigError(f"{where}: image size {list(value)} is not square; zeroshot's models take square inputs. "
                              "Give one number (e.g. 224) or [224, 224]")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ConfigError(f"{where}: image size {value!r} is not a positive whole number; give e.g. 224 or [224, 224]")
    if value > MAX_IMAGE_SIZE:  # a 10^9 side would be a MemoryError deep in the resize, 93 lines of traceback
        raise ConfigError(f"{where}: image size {int(value)} is beyond any CLIP-family model's input (at most "
                          f"{MAX_IMAGE_SIZE} here); give the size the model was trained at, e.g. 224")
    return int(value)


@dataclass
class Preprocess:
    size: int = 224
    mean: list[float] = field(default_factory=lambda: list(MEAN))
    std: list[float] = field(default_factory=lambda: list(STD))
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"Unknown interpolation {self.interpolation!r}. Choose one of: {', '.join(INTERPOLATIONS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"Unknown resize_mode {self.resize_mode!r}. Choose one of: {', '.join(RESIZE_MODES)}")
        self.size = square_size(self.size, "preprocessing (model.preprocess.size)")
        self.mean, self.std = [float(x) for x in self.mean], [float(x) for x in self.std]

    def as_dict(self) -> dict:
        return asdict(self)


class To8Bit:
    """Bring 16-bit and float images into 8-bit L before any resizing.

    PIL's convert("RGB") clips 16-bit values at 255 (a 16-bit scan turns white); scaling by the
    type's range keeps the picture. 8-bit modes pass through untouched, so they match OpenAI exactly.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            if image.mode == "F" and array.max() <= 1.0:
                peak = 1.0
            return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        return image

    def __repr__(self) -> str:
        return "To8Bit(16-bit and float scaled by range)"


class ToRGB:
    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def resize_to(image: Image.Image, height: int, width: int, interpolation: str) -> Image.Image:
    """PIL's resize with the named filter; an image already that size is returned as it is (no resampling pass,
    as torchvision does)."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), PIL_FILTERS[interpolation])


def pad_black(image: Image.Image, left: int, top: int, right: int, bottom: int) -> Image.Image:
    """Widen the canvas with zeros in every band (palette index 0 for a P image, whose palette is kept)."""
    bands = len(image.getbands())
    fill = 0 if bands == 1 else (0,) * bands
    out = ImageOps.expand(image, border=(left, top, right, bottom), fill=fill)
    if image.mode == "P":
        out.putpalette(image.getpalette())
    return out


class Resize:
    """Shorter side to `size`, the longer one scaled and rounded down (`int(size * long / short)`); or, with
    `square=True`, both sides to `size` (open_clip's resize_mode='squash')."""

    def __init__(self, size: int, interpolation: str, square: bool = False):
        self.size, self.interpolation, self.square = size, interpolation, square

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if self.square:
            return resize_to(image, self.size, self.size, self.interpolation)
        longer = int(self.size * max(w, h) / min(w, h))
        height, width = (longer, self.size) if w <= h else (self.size, longer)
        return resize_to(image, height, width, self.interpolation)

    def __repr__(self) -> str:
        side = "both sides" if self.square else "shorter side"
        return f"Resize(size={self.size}, {side}, interpolation={self.interpolation}, PIL)"


class CenterCrop:
    """The central `size` x `size` window, offsets rounded half to even (Python's round); an image smaller than
    the window is first padded with black, the odd pixel going right and bottom."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if w < self.size or h < self.size:
            dw, dh = max(self.size - w, 0), max(self.size - h, 0)
            image = pad_black(image, dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2)
            w, h = image.size
            if (w, h) == (self.size, self.size):
                return image
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size}, pad=0)"


class ResizeLongest:
    """Resize so the longer side is `size`, keeping the aspect ratio (open_clip's resize_mode='longest')."""

    def __init__(self, size: int, interpolation: str):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.size / max(w, h)
        return resize_to(image, max(1, round(h * scale)), max(1, round(w * scale)), self.interpolation)

    def __repr__(self) -> str:
        return f"ResizeLongest(size={self.size}, interpolation={self.interpolation})"


class PadToSquare:
    """Center the image on a `size` x `size` black canvas (after ResizeLongest)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        left, top = (self.size - w) // 2, (self.size - h) // 2
        return pad_black(image, left, top, self.size - w - left, self.size - h - top)

    def __repr__(self) -> str:
        return f"PadToSquare(size={self.size}, fill=0)"


class ToTensor:
    """An RGB image as a float [3, H, W] tensor in [0, 1]: uint8 values divided by 255 in the default float type."""

    def __call__(self, image: Image.Image):
        import torch  # this module is read by commands that load no model (hub.py's square_size): torch on use

        if image.mode != "RGB":  # ToRGB comes first; anything else is a bug in the pipeline
            raise TypeError(f"ToTensor takes an RGB image, not mode {image.mode}")
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))
        return pixels.permute(2, 0, 1).contiguous().to(dtype=torch.get_default_dtype()).div(255)

    def __repr__(self) -> str:
        return "ToTensor(uint8 RGB / 255)"


class Normalize:
    """(x - mean) / std per channel, in the tensor's own float type: a subtraction, then a division."""

    def __init__(self, mean, std):
        self.mean, self.std = [float(x) for x in mean], [float(x) for x in std]
        if not np.asarray(self.std, dtype=np.float32).all():
            raise ConfigError(f"preprocessing std {self.std} has a zero (in float32): it would divide by zero; "
                              "give the std the model was trained with")

    def __call__(self, x):
        import torch

        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub(mean).div_(std)  # the caller's tensor is left as it is

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose:
    """The steps, applied in order; `.transforms` lists them."""

    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image):
        for step in self.transforms:
            image = step(image)
        return image

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {step!r}\n" for step in self.transforms) + ")"


def image_transform(spec: Preprocess | int = 224) -> Compose:
    """The exact order matters for parity: resize and crop in the image's own mode, then convert to RGB."""
    p = spec if isinstance(spec, Preprocess) else Preprocess(size=int(spec))
    resize = {
        "shortest": [Resize(p.size, p.interpolation), CenterCrop(p.size)],
        "squash": [Resize(p.size, p.interpolation, square=True)],
        "longest": [ResizeLongest(p.size, p.interpolation), PadToSquare(p.size)],
    }[p.resize_mode]
    return Compose([To8Bit(), *resize, ToRGB(), ToTensor(), Normalize(p.mean, p.std)])


class LazyTransform:
    """`build(spec)` (image_transform), built on first use: a callable with the built transform's repr, and its
    attributes (`.transforms`). A run whose image features are all cached decodes no image, so it builds none."""

    def __init__(self, spec: Preprocess, build=None, cache_root: str | Path | None = None):
        self.spec, self.build, self.cache_root = spec, build or image_transform, cache_root
        self._built = None

    def materialize(self):
        """The built transform (a Compose for image_transform)."""
        if self._built is None:
            self._built = self.build(self.spec)
        return self._built

    @property
    def is_built(self) -> bool:
        return self._built is not None

    def __call__(self, image):
        return self.materialize()(image)

    def __repr__(self) -> str:
        return repr(self.materialize())

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not built yet (or being unpickled): no delegation
            raise AttributeError(name)
        return getattr(self.materialize(), name)


def _repr_record(t: LazyTransform) -> Path | None:
    """Where the repr of image_transform(t.spec) is remembered: one small file per settings and this file's code
    (what the repr depends on). Other builders are not remembered: they are built."""
    if t.build is not image_transform:
        return None
    parts = {"spec": t.spec.as_dict(), "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return Path(t.cache_root or default_cache_dir()) / "transforms" / f"{digest}.json"


def transform_repr(transform) -> str:
    """repr(transform); for a LazyTransform not yet built, read from where it was remembered when one was."""
    record = _repr_record(transform) if isinstance(transform, LazyTransform) else None
    saved = None
    if record is not None:
        try:
            entry = json.loads(record.read_text())
            if entry.get("spec") == transform.spec.as_dict() and isinstance(entry.get("repr"), str):
                saved = entry["repr"]
        except (OSError, ValueError, AttributeError):
            pass
        if saved is not None and not transform.is_built:
            return saved
    text = repr(transform)
    if record is not None and saved != text:
        try:
            with atomic_write(record, "w") as f:
                json.dump({"spec": transform.spec.as_dict(), "repr": text}, f)
        except OSError:  # an unwritable cache only means the transform is built again next time
            pass
    return text


def transform_spec(transform) -> dict:
    """What the feature cache keys on: the transform that runs, and the libraries that decode and resize."""
    import PIL

    return {"transform": transform_repr(transform), "pillow": PIL.__version__, "torchvision": package_version("torchvision")}
