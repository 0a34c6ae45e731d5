"""Scale: balanced torchrun shards whose cache still merges into whole chunks, resumes that rebalance, a text
cache two processes can write at once, and caches that cannot be written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zeroshot.distributed import assign, balanced_ranges
from zeroshot.features.cache import ImageFeatureCache
from zeroshot.features.extract import Encoding, compute, extract_features, segments
from conftest import QUIET, REPO, cli, make_cfg
from datagen import write_imagefolder


def test_balanced_shards_for_50000_images_on_16_ranks():
    n, world, batch, chunk = 50_000, 16, 64, 2048
    shares = assign(list(range(n)), world, batch, chunk)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= batch  # at most one batch apart
    assert [p for s in shares for p in s] == list(range(n))  # contiguous, each image once
    old = [len(s) for s in assign(list(range(n)), world, batch, chunk, mode="chunks")]
    assert max(old) / min(old) == 2  # the earlier whole-chunk scheme: 25 chunks on 16 ranks, 2:1
    # the cache stays mergeable: in every chunk, the pieces the ranks write tile it exactly
    pieces = sorted(seg for s in shares for seg in segments(s, chunk))
    for c in range(-(-n // chunk)):
        start, stop = c * chunk, min((c + 1) * chunk, n)
        mine = [(a, b) for a, b in pieces if a // chunk == c]
        assert mine[0][0] == start and mine[-1][1] == stop and all(x[1] == y[0] for x, y in zip(mine, mine[1:]))


def test_balanced_ranges_edges():
    for n in (0, 1, 5, 63, 64, 65, 1000):
        for world in (1, 2, 3, 16):
            ranges = balanced_ranges(n, world, 8)
            assert ranges[0][0] == 0 and ranges[-1][1] == n and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 8


def _dataset(folder, n_px=32):

    from zeroshot.data.readers import build_dataset
    from zeroshot.models.transforms import image_transform

    from conftest import dataset_config

    cfg = dataset_config("imagefolder", root=folder)
    return build_dataset(cfg, image_transform(n_px))


def test_pieces_from_three_ranks_merge_into_single_process_chunks(tmp_path, tiny_vit):
    ds = _dataset(write_imagefolder(tmp_path / "imgs", ["a", "b", "c"], per_class=9))  # 27 images
    single = ImageFeatureCache(tmp_path / "one", {"k": 1}, chunk_size=10)
    reference = extract_features(tiny_vit, ds, single, Encoding(batch_size=4))
    shared = ImageFeatureCache(tmp_path / "three", {"k": 1}, chunk_size=10)
    entries = []
    for share in assign(list(range(27)), 3, 4, 10):  # what each of three ranks computes and writes
        out, _ = compute(tiny_vit, ds, share, shared, Encoding(4, 0, "cpu", 10))
        entries += out
    assert any(".part_" in p.name for p in shared.dir.iterdir())  # ranges ended mid-chunk
    shared.merge(entries, 27)
    assert sorted(p.name for p in shared.dir.glob("*.pt")) == sorted(p.name for p in single.dir.glob("*.pt"))
    for name in (p.name for p in single.dir.glob("*.pt")):
        a, b = torch.load(single.dir / name), torch.load(shared.dir / name)
        assert (a["start"], a["stop"]) == (b["start"], b["stop"]) and torch.equal(a["indices"], b["indices"])
        assert torch.allclose(a["features"], b["features"], atol=1e-6)
    again = extract_features(tiny_vit, ds, shared, Encoding(batch_size=4))
    assert again.from_cache == 27 and torch.allclose(again.features, reference.features, atol=1e-6)


@pytest.mark.cli
@pytest.mark.dist
def test_torchrun_eval_resumes_after_a_partial_cache(tmp_path, tiny_checkpoint):
    data = write_imagefolder(tmp_path / "imgs", ["ant", "bee", "cow"], per_class=7)  # 21 images
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={data}", "num_workers=0",
              "progress=false", "batch_size=2", "chunk_size=4", f"cache_dir={tmp_path / 'cache'}",
              'prompts.templates=["a photo of a {}."]']
    one = cli("eval", *common, f"results_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    chunks = sorted((tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    assert len(chunks) == 6
    for c in chunks[1:4]:  # a partial cache: three of six chunks lost
        c.unlink()
    two = cli("eval", *common, f"results_dir={tmp_path / 'two'}", ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    m1, m2 = (json.loads(next((tmp_path / d).rglob("metrics.json")).read_text()) for d in ("one", "two"))
    assert m2["world_size"] == 2 and m2["images_from_cache"] == 21 - 12 and m2["top1"] == pytest.approx(m1["top1"], abs=1e-12)
    names = sorted(p.name for p in (tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    assert len(names) == 6 and not any(".part_" in n for n in names)  # merged back into whole chunks


WRITER = """
import sys, torch
sys.path.insert(0, {tests!r})
from zeroshot.features.cache import TextCache
cache = TextCache({root!r}, "shared-model")
for i in range(30):
    cache.put({{f"{{sys.argv[1]}} prompt {{i}}": torch.full((4,), float(i))}})
"""


@pytest.mark.cli
def test_two_processes_write_the_text_cache_at_once(tmp_path):
    code = WRITER.format(tests=str(REPO / "tests"), root=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code, who]) for who in ("alpha", "beta")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    from zeroshot.features.cache import TextCache

    table = TextCache(tmp_path, "shared-model").get([f"{w} prompt {i}" for w in ("alpha", "beta") for i in range(30)])
    assert len(table) == 60 and float(table["beta prompt 29"][0]) == 29.0  # nothing dropped
    assert len(list(TextCache(tmp_path, "shared-model").dir.glob("*.pt"))) <= 2 * TextCache.MAX_FILES


def _eval_cfg(tmp_path, checkpoint, data, cache_dir, results):
    return make_cfg("eval", "dataset=imagefolder", f"dataset.root={data}", f"cache_dir={cache_dir}",
                    f"results_dir={results}", *QUIET, "batch_size=4", "chunk_size=8",
                    'prompts.templates=["a photo of a {}."]', checkpoint=checkpoint)


def _mount(args: list[str], target: Path) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", *args, str(target)], capture_output=True).returncode == 0


@pytest.mark.parametrize("kind", ["tiny_tmpfs", "read_only", "not_a_directory"])
def test_an_unwritable_cache_never_fails_a_run(tmp_path, tiny_checkpoint, kind, capsys):
    from zeroshot.commands.evaluate import evaluate

    data = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=30, size=40)
    reference = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, data, tmp_path / "good_cache", tmp_path / "ref"))
    cache = tmp_path / "cache"
    mounted = False
    if kind == "tiny_tmpfs":  # room for a little, then a full disk mid-run
        if not _mount(["-t", "tmpfs", "-o", "size=12k", "tmpfs"], cache):
            pytest.skip("cannot mount a tmpfs here")
        mounted = True
    elif kind == "read_only":
        cache.mkdir()
        if not _mount(["--bind", "-o", "ro", str(cache)], cache):
            pytest.skip("cannot make a read-only bind mount here")
        mounted = True
    else:
        cache.write_text("a file where the cache folder should be")
    try:
        capsys.readouterr()
        m = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, data, cache, tmp_path / "res"))
        err = capsys.readouterr().err
        assert m["top1"] == reference["top1"] and m["n_images"] == 60
        assert "cannot be written" in err and str(cache) in err
        assert err.count("feature cache") <= 1  # warned once
        if cache.is_dir():
            assert not [p for p in cache.rglob("*") if p.name.startswith(".") and p.is_file()]  # no partial file left
    finally:
        if mounted:
            subprocess.run(["umount", str(cache)], capture_output=True)


@pytest.mark.cli
def test_an_unwritable_results_folder_is_one_clean_error(tmp_path, tiny_checkpoint):
    data = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=1)
    (tmp_path / "blocked").write_text("a file, not a folder")
    r = cli("eval", f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={data}",
            f"results_dir={tmp_path / 'blocked' / 'results'}", f"cache_dir={tmp_path / 'c'}", "num_workers=0", "progress=false")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"the results folder {tmp_path / 'blocked' / 'results'}" in r.stderr and "results_dir=" in r.stderr


@pytest.mark.cli
def test_prompts_and_probe_refuse_torchrun(tmp_path):
    for command in ("prompts", "linear-probe"):
        r = cli(command, "dataset=imagefolder", "dataset.root=.", timeout=300, env={"WORLD_SIZE": "2", "RANK": "0"})
        assert r.returncode == 1 and "without torchrun" in r.stderr


@pytest.mark.cli
def test_two_evals_at_once_over_one_cache(tmp_path, tiny_checkpoint):
    """Both succeed (each writes whole files under unique temp names), and a third run finds everything cached."""
    data = write_imagefolder(tmp_path / "imgs", ["ant", "bee"], per_class=10)
    common = [sys.executable, "-m", "zeroshot", "eval", f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder",
              f"dataset.root={data}", f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false", "batch_size=2",
              "chunk_size=4", 'prompts.templates=["a photo of a {}.","a {}."]']
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*common, f"results_dir={tmp_path / f'r{i}'}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    third = subprocess.run([*common, f"results_dir={tmp_path / 'r3'}"], capture_output=True, text=True, cwd=REPO,
                           env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    tops = [json.loads(next((tmp_path / f"r{i}").rglob("metrics.json")).read_text()) for i in (0, 1, 3)]
    assert tops[2]["images_from_cache"] == 20 and len({m["top1"] for m in tops}) == 1
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
