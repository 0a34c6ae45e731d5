"""Issue 22: what a repeat `prompts` run loads. On image features that are all cached it decodes no image, so
it imports no torchvision (a second); its figures are drawn in a helper process (zeroshot.figures.drawing), so the
command itself never imports matplotlib. Weights are
memory-mapped, with the very tensors a plain torch.load gives, and the file's sha256 still names them.

Each run is a real `zeroshot prompts` in a subprocess, which prints the modules it ended with. Nothing here
measures time (benchmarks/startup.py does)."""
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from datagen import write_csv

# `zeroshot prompts ...` in-process, then the modules it loaded: one line, after everything the command printed
RUNNER = ("import sys\n"
          "from zeroshot.__main__ import main\n"
          "code = main(sys.argv[1:])\n"
          "print('MODULES ' + ' '.join(sorted(sys.modules)), flush=True)\n"
          "sys.exit(code)\n")


def prompts_run(tmp_path: Path, checkpoint: Path, csv: Path, *overrides: str) -> tuple[set[str], dict]:
    r = subprocess.run([sys.executable, "-c", RUNNER, "prompts", "dataset=csv", f"dataset.path={csv}",
                        f"model.checkpoint={checkpoint}", f"cache_dir={tmp_path / 'cache'}",
                        f"results_dir={tmp_path / 'results'}", "num_workers=0", "progress=false", "bootstrap=50",
                        *overrides], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    modules = set(r.stdout.strip().splitlines()[-1].removeprefix("MODULES ").split())
    run_dir = Path(r.stdout.split(" -> ")[-1].splitlines()[0].strip())
    return {m.split(".")[0] for m in modules}, json.loads((run_dir / "summary.json").read_text()) | {"dir": run_dir}


@pytest.fixture(scope="module")
def state_dict_checkpoint(tmp_path_factory, tiny_vit) -> Path:
    """A plain state dict (torch.save's zip format): the kind torch.load memory-maps."""
    path = tmp_path_factory.mktemp("sd") / "tiny-vit-state-dict.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


@pytest.mark.cli
def test_a_repeat_run_on_cached_features_imports_no_torchvision_and_no_matplotlib(tmp_path, state_dict_checkpoint):
    csv = write_csv(tmp_path / "data", ["apple", "bus", "cat"], per_class=4)
    first, s1 = prompts_run(tmp_path, state_dict_checkpoint, csv, 'prompts.templates=["a photo of a {}.","a {}."]')
    assert s1["images_encoded"] == 12
    assert "torchvision" not in first and "PIL" in first  # decoding images needs no torchvision either (issue 34c)
    assert "matplotlib" not in first and (s1["dir"] / "templates.png").is_file()  # drawn in the helper process

    again, s2 = prompts_run(tmp_path, state_dict_checkpoint, csv, "figures=false",
                            'prompts.templates=["a photo of the {}.","itap of a {}."]')
    assert s2["images_encoded"] == 0 and s2["images_from_cache"] == 12  # the cache key is the one the first run wrote
    assert "torchvision" not in again, "a run on cached features decodes no image: torchvision is not needed"
    assert "matplotlib" not in again, "figures=false draws nothing: matplotlib is not needed"
    assert not list(s2["dir"].glob("*.png")) and (s2["dir"] / "templates.csv").is_file()

    drawn, s3 = prompts_run(tmp_path, state_dict_checkpoint, csv, 'prompts.templates=["a photo of a {}.","a {}."]')
    assert s3["images_encoded"] == 0 and "torchvision" not in drawn and "matplotlib" not in drawn
    assert (s3["dir"] / "templates.png").is_file() and (s3["dir"] / "selection.png").is_file()
    for key in ("ensemble", "baseline", "selected", "methods"):  # the same numbers as the run that decoded the images
        assert s3[key] == s1[key], key


def test_lazy_transform_keys_the_cache_on_the_real_transform(tmp_path):
    """The repr the feature cache keys on, read back without building the transform, is the built one's."""
    from zeroshot.models.transforms import LazyTransform, Preprocess, image_transform, transform_repr

    for spec in (Preprocess(size=224), Preprocess(size=96, mean=[0.5] * 3, std=[0.25] * 3, interpolation="bilinear",
                                                  resize_mode="longest")):
        real = repr(image_transform(spec))
        first = LazyTransform(spec, image_transform, tmp_path)
        assert transform_repr(first) == real and first.is_built  # nothing remembered yet: built
        later = LazyTransform(spec, image_transform, tmp_path)
        assert transform_repr(later) == real and not later.is_built  # remembered: not built
        assert repr(later) == real and later.is_built and callable(later.transforms[0])
    other = LazyTransform(Preprocess(size=224), lambda spec: "not image_transform", tmp_path)
    assert transform_repr(other) == repr("not image_transform")  # another builder is always built, never looked up


@pytest.mark.cli
def test_package_version_reads_torchvision_without_importing_it():
    code = ("import sys\nfrom zeroshot.files import package_version\nv = package_version('torchvision')\n"
            "assert 'torchvision' not in sys.modules\nimport torchvision\nprint(v == torchvision.__version__, v)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("True"), r.stdout + r.stderr[-2000:]


def test_state_dicts_are_memory_mapped_with_the_tensors_a_plain_load_gives(tmp_path, state_dict_checkpoint):
    from zeroshot.files import sha256sum
    from zeroshot.models.checkpoint import read_file
    from zeroshot.models.loader import load_model

    plain = torch.load(state_dict_checkpoint, map_location="cpu", weights_only=True)
    mapped = read_file(state_dict_checkpoint)
    assert list(mapped) == list(plain)
    for k, t in plain.items():
        assert mapped[k].dtype == t.dtype and mapped[k].shape == t.shape and torch.equal(mapped[k], t), k
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the file's pages are the tensors' memory, not a copy read in
        assert str(state_dict_checkpoint.resolve()) in maps.read_text()
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 format cannot be mapped: it is read as before
    torch.save(plain, legacy, _use_new_zipfile_serialization=False)
    assert all(torch.equal(read_file(legacy)[k], t) for k, t in plain.items())

    model = load_model(state_dict_checkpoint, download_root=tmp_path / "cache")
    assert model.identity.sha256 == sha256sum(state_dict_checkpoint)  # the file's bytes still name the weights
    built = model.state_dict()
    assert all(torch.equal(built[k], t.float()) for k, t in plain.items())


def test_finite_check_tells_overflow_from_non_finite_weights(tmp_path, tiny_vit):
    """The weights check sums each tensor; a sum that overflows on finite values must not be called broken."""
    from zeroshot.errors import CheckpointError
    from zeroshot.models.loader import load_model

    sd = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    sd["visual.proj"].fill_(3e38)  # finite, but its sum is inf in fp32
    big = tmp_path / "big.pt"
    torch.save(sd, big)
    load_model(big, download_root=tmp_path / "cache")
    for bad in (float("nan"), float("inf"), -float("inf")):
        sd["visual.proj"][0, 1] = bad
        path = tmp_path / f"bad{bad}.pt"
        torch.save(sd, path)
        with pytest.raises(CheckpointError, match=r"visual.proj.*1 non-finite"):
            load_model(path, download_root=tmp_path / "cache")


# 20 allocations of 48 MB, each filled then freed: glibc maps each afresh (and faults every page in) by default,
# and reuses one after keep_freed_memory; prints the page faults of each half
FAULTS = ("import resource, sys\n"
          "from zeroshot.cli import keep_freed_memory\n"
          "def faults():\n"
          "    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "    for _ in range(20):\n"
          "        block = bytearray(48 << 20)\n"
          "        block[::4096] = b'x' * len(block[::4096])\n"
          "        del block\n"
          "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start\n"
          "before = faults()\n"
          "kept = keep_freed_memory()\n"
          "print(before, kept, faults())\n")


@pytest.mark.cli
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_cli_keeps_freed_memory_so_repeated_batches_reuse_their_pages():
    r = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, cwd=REPO, check=True)
    before, kept, after = r.stdout.split()
    pages = 20 * (48 << 20) // 4096
    assert kept == "True"
    assert int(before) > pages // 2  # each block faulted in afresh
    assert int(after) < pages // 10  # the first block's pages, then reuse
