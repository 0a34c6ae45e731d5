"""Data-parallel eval under torchrun: two CPU processes with gloo on 127.0.0.1."""
import json

import pandas as pd
import pytest

from zeroshot.distributed import shard_bounds
from conftest import cli
from datagen import write_imagefolder


def test_shard_bounds_cover_everything_once():
    for n in (0, 1, 7, 23):
        for world in (1, 2, 3, 5):
            covered = [i for r in range(world) for i in range(*shard_bounds(n, world, r))]
            assert covered == list(range(n))


@pytest.fixture
def data(tmp_path):
    return write_imagefolder(tmp_path / "imgs", ["ant", "bee", "cow"], per_class=7)  # 21 images: odd


def common(tmp_path, ckpt, data, results):
    return [f"model.checkpoint={ckpt}", "dataset=imagefolder", f"dataset.root={data}", f"results_dir={results}",
            f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false", "batch_size=2", "chunk_size=4",
            'prompts.templates=["a photo of a {}.","a {}."]']


@pytest.mark.cli
@pytest.mark.dist
def test_two_ranks_equal_one_process(tmp_path, tiny_checkpoint, data):
    single = cli("eval", *common(tmp_path, tiny_checkpoint, data, tmp_path / "one"), "cache=false")
    assert single.returncode == 0, single.stderr[-3000:]
    r = cli("eval", *common(tmp_path, tiny_checkpoint, data, tmp_path / "two"), ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {k: list((tmp_path / k).rglob("metrics.json")) for k in ("one", "two")}
    assert len(runs["one"]) == 1 and len(runs["two"]) == 1, runs  # only rank 0 writes, one directory
    m1, m2 = (json.loads(runs[k][0].read_text()) for k in ("one", "two"))
    assert m2["world_size"] == 2 and m1["world_size"] == 1 and m2["n_images"] == m1["n_images"] == 21
    for key in ("top1", "top5", "mean_per_class_recall"):
        assert m2[key] == pytest.approx(m1[key], abs=1e-12)
    p1, p2 = (pd.read_csv(runs[k][0].parent / "predictions.csv") for k in ("one", "two"))
    assert p1["index"].tolist() == p2["index"].tolist() == list(range(21))
    assert (p1[["label", "prediction", "top5"]] == p2[["label", "prediction", "top5"]]).all().all()
    # the cache written per shard is whole: a single process finds every chunk
    chunks = sorted(p.name for p in (tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    assert len(chunks) == 6  # ceil(21 / 4), three from each rank
    again = cli("eval", *common(tmp_path, tiny_checkpoint, data, tmp_path / "three"))
    m3 = json.loads(next((tmp_path / "three").rglob("metrics.json")).read_text())
    assert m3["images_from_cache"] == 21 and m3["top1"] == pytest.approx(m1["top1"], abs=1e-12), again.stderr[-2000:]


@pytest.mark.cli
@pytest.mark.dist
def test_a_failing_rank_fails_the_launch(tmp_path, tiny_checkpoint, data):
    # the last image is in rank 1's shard only; unreadable, so rank 1 raises while rank 0 waits for it
    (data / "cow" / "999.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = cli("eval", *common(tmp_path, tiny_checkpoint, data, tmp_path / "fail"), "cache=false", "dist_timeout_s=60", ranks=2,
            timeout=300)
    assert r.returncode != 0
    assert "999.png" in r.stderr + r.stdout
    assert not list((tmp_path / "fail").rglob("metrics.json")) if (tmp_path / "fail").exists() else True
