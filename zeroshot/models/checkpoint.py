"""Reading weights from files, safely: no byte of a checkpoint is ever run as code.

Formats:
- OpenAI's TorchScript archives (fp16 conv/linear weights, plus `input_resolution`, `context_length`,
  `vocab_size`). Read without TorchScript: the zip's pickle is opened by a restricted unpickler that builds
  tensors and plain containers only, and module objects become attribute records.
- plain state dicts (`.pt`, `.pth`, `.bin`), read with `torch.load(weights_only=True)`, memory-mapped when
  torch.save's zip format allows it (the tensors are the file's pages, read as they are touched, not copied in);
- open_clip training checkpoints (`{"state_dict": {"module.visual...": ...}, "epoch": ...}`);
- `.safetensors` files.
Every state dict comes back in OpenAI's key layout (`to_openai_layout`, `from_transformers`).
"""
from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from zeroshot.errors import CheckpointError, MissingFileError

EXPECTED = ("expected an OpenAI CLIP TorchScript archive, a state dict saved by torch.save (.pt/.pth/.bin), "
            "an open_clip checkpoint, a .safetensors file, or a model folder (open_clip or transformers)")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class ScriptObject:
    """What a TorchScript module becomes here: just its attributes (parameters, buffers, submodules).

    pickle creates it with cls.__new__ (NEWOBJ) and fills it with __setstate__ (BUILD); nothing else runs."""

    attributes: dict = {}

    def __setstate__(self, state) -> None:
        self.attributes = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors, OrderedDicts and attribute records; any other class in the pickle is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, raw):
        super().__init__(file)
        self.archive, self.prefix, self.raw = archive, prefix, raw
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module.startswith("__torch__"):
            return type(name, (ScriptObject,), {})
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is not a tensor or a plain container")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if key not in self.storages:
            info = self.archive.getinfo(f"{self.prefix}/data/{key}")
            data = bytearray(info.file_size)  # the tensor owns this memory: one read, no copy
            if info.compress_type == zipfile.ZIP_STORED:
                # torch stores tensors uncompressed: read them straight from the file, past the local header
                # (zipfile's reader goes through Python in small chunks, 3x slower than torch.jit.load)
                self.raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", self.raw.read(4))
                self.raw.seek(info.header_offset + 30 + name_len + extra_len)
                self.raw.readinto(data)
            else:
                with self.archive.open(info) as f:
                    f.readinto(data)
            self.storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    items = obj.attributes.items() if isinstance(obj, ScriptObject) else obj.items() if isinstance(obj, dict) else ()
    for name, value in items:
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, (ScriptObject, dict)):
            out.update(_tensors(value, f"{prefix}{name}."))
    return out


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" or "/code/" in n for n in z.namelist())


def read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, without TorchScript and without running its code."""
    with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
        data = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not data:
            raise CheckpointError(f"{path} is a TorchScript archive without data.pkl; {EXPECTED}.")
        prefix = data[0].split("/")[0]
        with z.open(data[0]) as f:
            root = _RestrictedUnpickler(f, z, prefix, raw).load()
    return _tensors(root)


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in head[:200]:
        return "an HTML page, probably a failed download (an error or login page saved in place of the file)"
    return None


def _torch_load(path: Path):
    try:  # torch's legacy (pre-1.6, non-zip) format cannot be mapped: it is read
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch suggests retrying with weights_only=False; that would run the file's code, so we never do
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # not a pickle of objects but a damaged or foreign file: say so, without torch's advice
            detail = re.search(r"WeightsUnpickler error: (.+)", str(e).replace("\n", " "))
            reason = detail.group(1).split(".")[0].strip()[:120] if detail else "not a pickle"
            raise CheckpointError(f"Could not read {path} as a checkpoint ({reason}); {EXPECTED}.") from None
        what = f" ({found.group(1)})"
        raise CheckpointError(
            f"{path} holds Python objects other than tensors{what}; zeroshot does not unpickle those because that "
            "can run code. Save the weights alone, e.g. torch.save(model.state_dict(), path) or as .safetensors."
        ) from None


def read_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw tensors of one checkpoint file, in whatever key layout the file uses."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without open_clip_config.json or config.json; give a checkpoint "
                              "file, or a model folder (open_clip's Hub layout or a transformers save_pretrained folder).")
    if not path.is_file():
        raise MissingFileError(f"Checkpoint file {path} does not exist.")
    html = _sniff(path)
    if html:
        raise CheckpointError(f"{path} is {html}: download it again, or load a verified local copy; {EXPECTED}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif is_torchscript(path):
            sd = read_torchscript(path)
        else:
            sd = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:  # torch, zipfile and pickle raise many types for the same problem: not a checkpoint
        reason = str(e).split("\n")[0][:300]
        raise CheckpointError(f"Could not read {path} as a checkpoint ({type(e).__name__}: {reason}); {EXPECTED}.") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]  # open_clip training checkpoint
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a dict of tensors; {EXPECTED}.")
    return sd


def to_openai_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's variants of OpenAI's key layout, mapped onto it: DDP's `module.` prefix, and the `text.`
    tower of open_clip's CustomTextCLIP (whose projection may be a Linear, stored as [out, in])."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}  # saved from DistributedDataParallel
    if any(k.startswith("text.") for k in sd):
        out = {}
        for k, v in sd.items():
            if k == "text.text_projection.weight":
                out["text_projection"] = v.t()
            elif k == "text.text_projection.bias":
                out["text_projection_bias"] = v
            elif k.startswith("text."):
                out[k[len("text."):]] = v
            else:
                out[k] = v
        sd = out
    sd.pop("attn_mask", None)
    return sd


_HF_BLOCK = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_HF_TOP = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias",
           "vision_model.embeddings.class_embedding": "visual.class_embedding",
           "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
           "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
           "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight", "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
           "vision_model.post_layernorm.weight": "visual.ln_post.weight",
           "vision_model.post_layernorm.bias": "visual.ln_post.bias", "logit_scale": "logit_scale"}


def from_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `transformers` CLIPModel state dict in OpenAI's layout: q/k/v projections concatenated into
    in_proj, fc1/fc2 renamed, and the two [out, in] projection matrices transposed."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    block = re.compile(r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    for k, v in sd.items():
        if k in _HF_TOP:
            out[_HF_TOP[k]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.t()
        elif k == "visual_projection.weight":
            out["visual.proj"] = v.t()
        elif m := block.match(k):
            tower, i, part, kind = m.groups()
            prefix = f"{'visual.' if tower == 'vision' else ''}transformer.resblocks.{i}."
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{prefix}attn.in_proj_{kind}", {})[part[-6]] = v
            elif part in _HF_BLOCK:
                out[f"{prefix}{_HF_BLOCK[part]}.{kind}"] = v
            else:
                raise CheckpointError(f"unexpected tensor {k!r} in a transformers CLIPModel")
        elif not k.endswith("position_ids"):
            raise CheckpointError(f"unexpected tensor {k!r} in a transformers CLIPModel")
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])  # [3D, D] or [3D]
    return out
