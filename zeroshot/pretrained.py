"""OpenAI's released checkpoints: names, downloads into a verified cache, and loading every file format.

Formats read from disk:
- OpenAI's TorchScript archives (fp16 conv/linear weights, plus `input_resolution`, `context_length`, `vocab_size`);
- plain state dicts (`.pt`, `.pth`, `.bin`), read with `weights_only=True`;
- open_clip training checkpoints (`{"state_dict": {"module.visual...": ...}, "epoch": ...}`);
- `.safetensors` files.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from tqdm import tqdm

from .model import CLIP, build_model

_BASE = "https://openaipublic.azureedge.net/clip/models"
# name -> (sha256, file name); the sha256 is also a path segment of the URL.
_CHECKPOINTS = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt"),
}
MODELS: dict[str, tuple[str, str]] = {name: (f"{_BASE}/{sha}/{file}", sha) for name, (sha, file) in _CHECKPOINTS.items()}

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CheckpointError(RuntimeError):
    pass


def available_models() -> list[str]:
    return list(MODELS)


def canonical_name(name: str) -> str | None:
    """'ViT-B-32', 'vit-b/32' and 'ViT-B/32' all name ViT-B/32; 'ViT-L-14-336px' names ViT-L/14@336px."""
    def key(s: str) -> str:
        return s.lower().replace("/", "-").replace("@", "-")

    return {key(n): n for n in MODELS}.get(key(name))


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZEROSHOT_CACHE") or Path.home() / ".cache" / "zeroshot")


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str, root: str | Path | None = None) -> Path:
    """Fetch `url` into the cache, verified: a temp file is renamed into place only once its sha256 matches.

    A cached file is re-hashed before it is trusted; a mismatching one is removed and fetched again.
    """
    root = Path(root) if root is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / Path(url).name
    if target.is_file():
        if sha256sum(target) == sha256:
            return target
        print(f"zeroshot: cached {target} does not match sha256 {sha256}; removing it and downloading again")
        target.unlink()

    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size, total = _fetch(url, out, target.name)
        if total is not None and size != total:
            raise CheckpointError(f"Download of {url} was cut short: got {size} of {total} bytes. The partial file was removed; try again.")
        if digest != sha256:
            raise CheckpointError(
                f"Downloaded {url} but its sha256 is {digest}, expected {sha256}. "
                "The corrupt file was removed; try again, or load a verified local copy by path."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fetch(url: str, out, label: str) -> tuple[str, int, int | None]:
    """Stream `url` into `out` with a progress bar; returns (sha256, bytes written, Content-Length)."""
    digest, size, total = hashlib.sha256(), 0, None
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
    except http.client.IncompleteRead:
        pass  # reported below as a short download, with the byte counts
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise CheckpointError(
            f"Could not download {url}: {getattr(e, 'reason', None) or e}.\n"
            f"If this machine is offline, fetch the file elsewhere and load it by path: "
            f"zeroshot.load('/path/to/{label}'), or `python -m zeroshot eval model.checkpoint=/path/to/{label}`."
        ) from e
    return digest.hexdigest(), size, total


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" or "/code/" in n for n in z.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the parameters from any supported checkpoint file, as an OpenAI-layout state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {path} does not exist. Pass a path to a CLIP checkpoint, or a model name: {', '.join(MODELS)}")
    expected = (
        "expected an OpenAI CLIP TorchScript archive, a state dict saved by torch.save (.pt/.pth/.bin), "
        "an open_clip checkpoint, or a .safetensors file"
    )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is how OpenAI's files open
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch, zipfile and pickle raise many types for the same problem: not a checkpoint
        raise CheckpointError(f"Could not read {path} as a checkpoint ({type(e).__name__}: {e}); {expected}.") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]  # open_clip training checkpoint
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a dict of tensors; {expected}.")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}  # saved from DistributedDataParallel
    if "text_projection" not in sd or not any(k.startswith("visual.") for k in sd):
        raise CheckpointError(f"{path} is a state dict but not of a CLIP model (no text_projection/visual.* keys); {expected}.")
    return sd


def resolve_checkpoint(name_or_path: str | Path, download_root: str | Path | None = None) -> tuple[Path, str]:
    """(file, its sha256): a model name becomes a verified file in the cache; anything else must be a file."""
    name = canonical_name(str(name_or_path))
    if name is not None:
        url, sha = MODELS[name]
        return download(url, sha, download_root), sha
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, sha256sum(path)
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") or path.is_absolute() or str(name_or_path).startswith("."):
        raise FileNotFoundError(f"Checkpoint file {path} does not exist. Give an existing file, or a model name: {', '.join(MODELS)}")
    raise ValueError(f"Unknown model {str(name_or_path)!r}. Available models: {', '.join(MODELS)} (or a path to a checkpoint file)")


def resolve_precision(precision: str | None, device: torch.device) -> str:
    if precision in (None, "auto"):
        return "fp16" if device.type == "cuda" else "fp32"  # what clip.load does
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Choose one of: {', '.join(PRECISIONS)}")
    if precision != "fp32" and device.type == "cpu":
        raise ValueError(f"precision={precision} is not supported on the CPU (half-precision matmul is very slow there); use fp32")
    return precision


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    download_root: str | Path | None = None,
) -> CLIP:
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    path, sha = resolve_checkpoint(name_or_path, download_root)
    model = build_model(read_state_dict(path))
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = sha
    model.name = canonical_name(str(name_or_path)) or path.stem
    model.precision = precision
    return model.requires_grad_(False).to(device=device, dtype=_DTYPES[precision]).eval()
