"""Shared fixtures: tiny random CLIPs saved in real checkpoint formats, and the reference packages."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from zeroshot.models.clip import CLIP, CLIPConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Small, but with the real vocabulary and context length so the real tokenizer drives them.
TINY_VIT = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                      transformer_width=64, transformer_heads=1, transformer_layers=2)
TINY_RN = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                     vision_patch_size=None, transformer_width=64, transformer_heads=1, transformer_layers=2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never touch the user's caches, nor the network: zeroshot's and Hugging Face's caches are private,
    and the Hub is offline unless a test points HF_ENDPOINT at its own local server (subprocesses inherit this)."""
    private = {"ZEROSHOT_CACHE": str(tmp_path_factory.mktemp("zeroshot-cache")),
               "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    old = {k: os.environ.get(k) for k in private}
    os.environ.update(private)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared exists only beside the project's own checkout)")
    return path


def randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, so the ResNet path is not close to an identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model


def random_model(config: CLIPConfig, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return randomize_batchnorm(CLIP(config).eval())


def to_openai_fp16(model: CLIP) -> CLIP:
    """What OpenAI's convert_weights does: conv, linear and attention weights and the projections in fp16."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            m.weight.data = m.weight.data.half()
            if m.bias is not None:
                m.bias.data = m.bias.data.half()
        for name in ("in_proj_weight", "in_proj_bias", "text_projection", "proj"):
            p = getattr(m, name, None)
            if isinstance(p, torch.nn.Parameter):
                p.data = p.data.half()
    return model


class _Archive(torch.nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        c = model.config
        for key, value in (("input_resolution", c.image_resolution), ("context_length", c.context_length), ("vocab_size", c.vocab_size)):
            self.register_buffer(key, torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale.exp()


def save_openai_archive(model: CLIP, path: Path) -> Path:
    """A TorchScript archive laid out like OpenAI's released .pt files (fp16 weights + metadata keys)."""
    import copy

    archive = _Archive(to_openai_fp16(copy.deepcopy(model)))
    traced = torch.jit.trace(archive, torch.ones(1))
    traced.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_vit() -> CLIP:
    return random_model(TINY_VIT)


@pytest.fixture(scope="session")
def tiny_rn() -> CLIP:
    return random_model(TINY_RN, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_vit) -> Path:
    return save_openai_archive(tiny_vit, tmp_path_factory.mktemp("ckpt") / "tiny-vit.pt")


@pytest.fixture(scope="session")
def openai_clip():
    """OpenAI's `clip` package; it imports pkg_resources.packaging, which new setuptools lacks."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        shim = types.ModuleType("pkg_resources")
        shim.packaging = types.SimpleNamespace(version=packaging.version)
        sys.modules["pkg_resources"] = shim
    import clip  # a declared test dependency (openai-clip): missing, the test fails rather than skips

    return clip


@pytest.fixture(scope="session")
def open_clip():
    import open_clip  # a declared test dependency: missing, the test fails rather than skips

    return open_clip


class _NoTokenizer:
    """save_for_hf also saves an HF tokenizer; CLIP's BPE ships with zeroshot, so there is none to save."""

    def save_pretrained(self, directory):
        pass


def save_openclip_folder(model, model_cfg: dict, folder: Path, preprocess: dict | None = None) -> Path:
    """open_clip's own Hub layout, written by open_clip's own save code (open_clip_config.json + weights)."""
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.push_to_hf_hub import save_for_hf

    if not hasattr(model.visual, "image_mean") or preprocess:
        set_model_preprocess_cfg(model, {"size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
                                         "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic",
                                         "resize_mode": "shortest", "fill_color": 0, **(preprocess or {})})
    save_for_hf(model, _NoTokenizer(), model_cfg, str(folder), safe_serialization=True)
    return folder


def openclip_model(open_clip, model_cfg: dict, seed: int = 0):
    """A random open_clip CLIP built from a model config dict, BatchNorm randomized (ResNets)."""
    torch.manual_seed(seed)
    cfg = dict(model_cfg)
    quick = cfg.pop("quick_gelu", False)
    cls = open_clip.CustomTextCLIP if cfg.get("custom_text") else open_clip.CLIP
    cfg.pop("custom_text", None)
    return randomize_batchnorm(cls(**cfg, quick_gelu=quick).eval())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / a.float().abs().max()).item()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for torchrun's rendezvous, a local server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cfg(config: str, *overrides, tmp_path: Path | None = None, checkpoint=None):
    """configs/<config>.yaml as Hydra composes it, with the overrides (they come last and win). With tmp_path, the
    run's results and caches go under it; with checkpoint, the model is that file."""
    from hydra import compose, initialize_config_dir

    base = [f"model.checkpoint={checkpoint}"] if checkpoint is not None else []
    if tmp_path is not None:
        base += [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config, overrides=[*base, *map(str, overrides)])


def dataset_config(name: str, **overrides):
    """A dataset's config as Hydra composes it from configs/dataset/<name>.yaml (its defaults included)."""
    return make_cfg("eval", f"dataset={name}", *(f"dataset.{k}={v}" for k, v in overrides.items())).dataset


# the quiet, single-process settings most tests run with
QUIET = ("num_workers=0", "progress=false")


def with_base(path: Path) -> dict:
    """A dataset config file with its base merged in (`defaults: [_torchvision, _self_]`), without Hydra: cheap where
    every dataset is read (test_configs checks it equals what Hydra composes)."""
    import yaml

    own = yaml.safe_load(path.read_text())
    merged = {}
    for base in own.pop("defaults", []):
        merged.update(own if base == "_self_" else yaml.safe_load((path.parent / f"{base}.yaml").read_text()))
    return merged or own


def eval_config(tmp_path, checkpoint, *overrides, config: str = "eval"):
    """A command's config on a checkpoint, results and caches under tmp_path, quiet and without figures."""
    return make_cfg(config, *QUIET, "figures=false", *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


def cli(*args, cwd=REPO, env: dict | None = None, timeout: int = 600, stdin: str | None = None, code: str | None = None,
        ranks: int | None = None) -> subprocess.CompletedProcess:
    """`python -m zeroshot ARGS` as a user runs it (`python -c CODE ARGS` with code; under torchrun with `ranks`
    processes, one thread each), this checkout first on the path, env added to the environment, output as text."""
    head = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "zeroshot"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if ranks is not None:
        head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", *head[1:]]
        env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([*head, *map(str, args)], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def one_and_two_ranks(command: str, common: list[str], tmp_path) -> tuple[dict, dict, Path, Path]:
    """Run `zeroshot COMMAND` in one process (no cache) and under torchrun with two ranks; each must exit 0 and
    only rank 0 may write a run. Returns both metrics.json records and their run directories."""
    import json

    launches = {"one": ([command, *common, f"results_dir={tmp_path / 'one'}", "cache=false"], None),
                "two": ([command, *common, f"results_dir={tmp_path / 'two'}", f"cache_dir={tmp_path / 'cache'}"], 2)}
    for name, (args, ranks) in launches.items():
        r = cli(*args, ranks=ranks, env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, (name, r.stderr[-3000:])
    runs = {k: list((tmp_path / k).rglob("metrics.json")) for k in launches}
    assert len(runs["one"]) == 1 and len(runs["two"]) == 1, runs  # only rank 0 writes
    (one,), (two,) = runs["one"], runs["two"]
    return json.loads(one.read_text()), json.loads(two.read_text()), one.parent, two.parent
