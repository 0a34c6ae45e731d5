"""Checkpoint names, every file format, the verified download cache, and the errors users will meet."""
import copy
import hashlib
from pathlib import Path

import pytest
import torch

import zeroshot
from zeroshot.models import loader as pretrained, registry as sources
from zeroshot.errors import CheckpointError
from zeroshot.models.checkpoint import read_file, read_torchscript
from zeroshot.files import download, file_sha256
from zeroshot.models.registry import canonical_name
from conftest import to_openai_fp16
from localserver import server  # noqa: F401  (the fixture)


def features(model, n_px):
    torch.manual_seed(0)
    images = torch.randn(2, 3, n_px, n_px)
    text = zeroshot.tokenize(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def assert_same_features(a, b, n_px):
    for x, y in zip(features(a, n_px), features(b, n_px)):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5)


def test_available_models_and_spellings():
    from zeroshot.commands.models import rows

    names = zeroshot.available_models()
    assert names[:9] == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    # everything `zeroshot models` lists as a name to load (its model= rows are configs naming one of these)
    assert names == [r[0] for r in rows() if not r[0].startswith("model=")] and len(names) > 150
    assert "ViT-B-32/laion2b_s34b_b79k" in names and len(set(names)) == len(names)
    assert canonical_name("ViT-B-32") == "ViT-B/32"
    assert canonical_name("vit-l-14-336px") == "ViT-L/14@336px"
    assert canonical_name("ViT-X/99") is None
    for name, (url, sha) in sources.MODELS.items():
        assert f"/{sha}/" in url and url.endswith(".pt") and len(sha) == 64


def test_openai_torchscript_archive(tiny_vit, tiny_checkpoint):
    model, preprocess = zeroshot.load(tiny_checkpoint)
    assert model.dtype == torch.float32 and not model.training
    assert model.identity.sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    sd = torch.jit.load(str(tiny_checkpoint)).state_dict()
    assert sd["visual.conv1.weight"].dtype == torch.float16 and "input_resolution" in sd
    # read without TorchScript: the same tensors, dtypes and names as torch.jit.load gives
    ours = read_torchscript(tiny_checkpoint)
    assert set(ours) == set(sd) and all(torch.equal(ours[k], sd[k]) and ours[k].dtype == sd[k].dtype for k in sd)
    expected = to_openai_fp16(copy.deepcopy(tiny_vit)).float()  # fp16-rounded weights, computed in fp32
    assert_same_features(model, expected, 32)
    assert preprocess.transforms[1].size == 32


def test_plain_state_dict_open_clip_checkpoint_and_safetensors(tmp_path, tiny_rn):
    from safetensors.torch import save_file

    sd = tiny_rn.state_dict()
    files = {
        "plain.pt": lambda p: torch.save(sd, p),
        "plain.bin": lambda p: torch.save(sd, p),
        "openclip.pth": lambda p: torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, p),
        "model.safetensors": lambda p: save_file({k: v.contiguous() for k, v in sd.items()}, str(p)),
    }
    for name, write in files.items():
        write(tmp_path / name)
        model, _ = zeroshot.load(tmp_path / name)
        assert_same_features(model, tiny_rn, 64)


@pytest.mark.parametrize("content,expect", [
    (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", "an HTML page, probably a failed download"),
    (b"  <html><head><title>Sign in</title></head></html>", "an HTML page, probably a failed download"),
    (bytes(range(256)) * 40, "Could not read"),
], ids=["doctype", "html", "noise"])
def test_not_a_checkpoint(tmp_path, content, expect):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        zeroshot.load(path)
    assert str(path) in str(e.value) and expect in str(e.value)


def test_a_directory_is_recognised(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="holds no model.*open_clip_config.json.*config.json.*notes.txt"):
        zeroshot.load(tmp_path / "run")


def test_pickled_objects_are_refused_without_torch_advice(tmp_path):
    """A file that needs more than weights_only unpickling is refused; torch's advice to retry with
    weights_only=False (which would run the file's code) is never passed on."""
    import argparse

    path = tmp_path / "with_objects.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError) as e:
        read_file(path)
    assert "argparse.Namespace" in str(e.value) and "weights_only" not in str(e.value) and str(path) in str(e.value)


def test_torchscript_reader_runs_no_code(tmp_path):
    """An archive whose pickle calls a function (here os.system) is refused before anything runs."""
    import os
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"visual.proj": Evil()}, protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
        z.writestr("evil/code/__torch__/m.py", "")
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        zeroshot.load(path)
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path, tiny_checkpoint):
    path = tmp_path / "truncated.pt"
    path.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        zeroshot.load(path)


def test_state_dict_of_something_else(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a CLIP model"):
        zeroshot.load(path)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError) as e:
        zeroshot.load("ViT-Q/7")
    assert "ViT-B/32" in str(e.value) and "RN50x64" in str(e.value) and "ARCH/TAG" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        zeroshot.load(tmp_path / "nope.pt")


def test_precision_rules(monkeypatch, capsys):
    cpu = torch.device("cpu")
    assert pretrained.resolve_precision(None, cpu) == "fp32"
    assert pretrained.resolve_precision("auto", cpu) == "fp32"  # the exact result is the CPU default
    assert pretrained.resolve_precision(None, torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        pretrained.resolve_precision("int8", cpu)
    # bf16 on a CPU: allowed where the CPU has it natively, a clear stop where it would be emulated
    from zeroshot.models import precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2"})
    with pytest.raises(ValueError, match="precision=bf16 on this CPU would be emulated .*avx512_bf16 or amx_bf16"):
        pretrained.resolve_precision("bf16", cpu)
    with pytest.raises(ValueError, match="avx512_fp16"):
        pretrained.resolve_precision("fp16", cpu)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert pretrained.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"amx_bf16"})
    assert pretrained.resolve_precision("bf16", cpu) == "bf16"


def test_sha256_is_remembered_and_invalidated(tmp_path, monkeypatch):
    """The sha256 of a checkpoint is computed once per (path, size, mtime, inode); a changed file is rehashed."""
    from zeroshot import files as dl

    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = dl.sha256sum
    monkeypatch.setattr(dl, "sha256sum", lambda p, *a: calls.append(p) or real(p, *a))
    first = file_sha256(path, tmp_path / "cache")
    assert file_sha256(path, tmp_path / "cache") == first and len(calls) == 1
    import os
    import time

    path.write_bytes(b"b" * 1000)  # same size; a new mtime
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = file_sha256(path, tmp_path / "cache")
    assert second != first and second == hashlib.sha256(b"b" * 1000).hexdigest() and len(calls) == 2


# ---------------------------------------------------------------- downloads from a local server



def _leftovers(root: Path) -> list:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_download_good_hash_then_cached(server, tmp_path, tiny_checkpoint):
    base, routes = server
    body = tiny_checkpoint.read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    routes["/good/tiny.pt"] = (200, body, None)
    path = download(f"{base}/good/tiny.pt", sha, tmp_path)
    assert path.read_bytes() == body and not _leftovers(tmp_path)
    routes.pop("/good/tiny.pt")  # a second call must not need the server
    assert download(f"{base}/good/tiny.pt", sha, tmp_path) == path


def test_corrupt_cached_file_is_refetched(server, tmp_path):
    base, routes = server
    routes["/re/file.pt"] = (200, b"right bytes", None)
    (tmp_path / "file.pt").write_bytes(b"wrong bytes")
    path = download(f"{base}/re/file.pt", hashlib.sha256(b"right bytes").hexdigest(), tmp_path)
    assert path.read_bytes() == b"right bytes"


def test_download_bad_hash(server, tmp_path):
    base, routes = server
    routes["/bad/x.pt"] = (200, b"not what you wanted", None)
    with pytest.raises(CheckpointError, match="sha256"):
        download(f"{base}/bad/x.pt", "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_truncated_body(server, tmp_path):
    base, routes = server
    routes["/short/x.pt"] = (200, b"only part", 1000)
    with pytest.raises(CheckpointError, match="cut short"):
        download(f"{base}/short/x.pt", "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_server_error(server, tmp_path):
    base, routes = server
    routes["/err/x.pt"] = (500, b"oops", None)
    with pytest.raises(CheckpointError) as e:
        download(f"{base}/err/x.pt", "0" * 64, tmp_path)
    assert f"{base}/err/x.pt" in str(e.value) and "model.checkpoint=" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_names_url_and_local_alternative(tmp_path, monkeypatch):
    # nothing listens on port 9 of 127.0.0.1: the same failure as no network, without touching one
    monkeypatch.setitem(sources.MODELS, "RN50", ("http://127.0.0.1:9/clip/RN50.pt", "0" * 64))
    with pytest.raises(CheckpointError) as e:
        zeroshot.load("RN50", download_root=tmp_path)
    assert "http://127.0.0.1:9/clip/RN50.pt" in str(e.value) and "zeroshot.load('/path/to/RN50.pt')" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_load_by_name_downloads_into_env_cache(server, tmp_path, monkeypatch, tiny_checkpoint):
    base, routes = server
    body = tiny_checkpoint.read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    routes[f"/clip/models/{sha}/ViT-B-32.pt"] = (200, body, None)
    monkeypatch.setitem(sources.MODELS, "ViT-B/32", (f"{base}/clip/models/{sha}/ViT-B-32.pt", sha))
    monkeypatch.setenv("ZEROSHOT_CACHE", str(tmp_path / "cache"))
    model, _ = zeroshot.load("ViT-B-32")
    assert (tmp_path / "cache" / "ViT-B-32.pt").is_file()
    ident = model.identity
    assert ident.sha256 == sha and ident.label == ident.release == "ViT-B-32/openai"
    assert ident.activation == "quick_gelu" and ident.source == "openai" and ident.assumed[:1] != ["activation"]
