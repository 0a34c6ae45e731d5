"""dataset=hf: Hugging Face datasets written by the `datasets` library itself (Parquet shards, save_to_disk folders)
give the same predictions as the same JPEG files read as an image folder; the Hub's copy through a local Hub."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, dataset_config, eval_config, make_cfg
from zeroshot.commands.evaluate import evaluate
from zeroshot.data.readers import build_dataset
from zeroshot.errors import DatasetError, UserError

CLASSES = ["cat", "dog", "fox"]


def cfg(tmp_path, checkpoint, *overrides):
    return eval_config(tmp_path, checkpoint, "batch_size=4", *overrides)


def dataset_cfg(**overrides):
    return dataset_config("hf", **overrides)


def write_jpegs(root: Path, per_class: int = 3) -> Path:
    """Real JPEG files of several sizes, one of them grayscale (decoded to RGB by every source alike)."""
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(x) for x in rng.integers(20, 70, 2))
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if (c, i) == ("dog", 1) else image).save(root / c / f"{i:03d}.jpg", quality=90)
    return root


def hf_dataset(folder: Path, image_column="image", label_column="label", classlabel=True):
    """The folder's images, in the image folder's order, as a `datasets.Dataset` with an Image and a ClassLabel."""
    import datasets  # declared in [test]: missing, the test fails
    paths = sorted(p for p in folder.rglob("*.jpg"))
    rows = {image_column: [{"bytes": p.read_bytes(), "path": p.name} for p in paths],
            label_column: [CLASSES.index(p.parent.name) for p in paths]}
    label = datasets.ClassLabel(names=CLASSES) if classlabel else datasets.Value("int64")
    features = datasets.Features({image_column: datasets.Image(), label_column: label})
    return datasets.Dataset.from_dict(rows, features=features)


def write_parquet(ds, root: Path, split="test", shards=2, rows_per_group=2) -> Path:
    """Shards named as the Hub names them (data/<split>-0000i-of-0000n.parquet), several row groups each."""
    for i in range(shards):
        ds.shard(shards, i, contiguous=True).to_parquet(str(root / "data" / f"{split}-{i:05d}-of-{shards:05d}.parquet"),
                                                        batch_size=rows_per_group)
    return root


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    import datasets

    tmp = tmp_path_factory.mktemp("hf")
    folder = write_jpegs(tmp / "folder")
    ds = hf_dataset(folder)
    parquet = write_parquet(ds, tmp / "parquet")
    write_parquet(ds.select([0, 1]), parquet, split="train", shards=1)  # another split beside it: never read
    datasets.DatasetDict({"test": ds, "train": ds.select([0])}).save_to_disk(str(tmp / "arrow"), num_shards={"test": 2, "train": 1})
    return folder, parquet, tmp / "arrow"


def logits(metrics: dict):
    return np.load(Path(metrics["run_dir"]) / "logits.npz")


def test_parquet_and_save_to_disk_equal_the_image_folder(tmp_path, tiny_checkpoint, pets):
    folder, parquet, arrow = pets
    want = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={folder}"))
    runs = [evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=hf", f"dataset.root={parquet}", "num_workers=2")),
            evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=hf", f"dataset.root={arrow}"))]
    expect = logits(want)
    assert expect["logits"].shape == (9, 3)
    for got in runs:
        g = logits(got)
        assert np.array_equal(g["labels"], expect["labels"]) and np.array_equal(g["indices"], expect["indices"])
        assert np.allclose(g["logits"], expect["logits"], atol=1e-6), np.abs(g["logits"] - expect["logits"]).max()
        assert got["top1"] == want["top1"] and got["n_images"] == 9 and got["dataset_label"].startswith("hf:")
    parquet_run, arrow_run = runs
    assert parquet_run["dataset_fingerprint_kind"] == "packed" and parquet_run["dataset_fingerprint"] != arrow_run["dataset_fingerprint"]
    preds = (Path(parquet_run["run_dir"]) / "predictions.csv").read_text()
    assert "data/test-00001-of-00002.parquet#0" in preds  # rows are named by file and row


def test_the_index_is_row_groups_and_the_fingerprint_follows_content_and_columns(tmp_path, pets):
    _, parquet, arrow = pets
    ds = build_dataset(dataset_cfg(root=parquet))
    src = ds.source
    assert [c.rows for c in src.chunks] == [2, 2, 1, 2, 2]  # 5 + 4 rows in row groups of 2, per shard
    assert src.classes == CLASSES and src.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    image, label = src[6]  # the second shard's second row: only its row group's image column is read
    assert label == 2 and image.mode == "RGB" and len(src._cached[1]) == 2 and list(src._open) == [1]
    fp = ds.fingerprint()
    assert sorted(fp["files"]) == ["data/test-00000-of-00002.parquet", "data/test-00001-of-00002.parquet"]
    # the same bytes elsewhere are the same dataset; another label column, or changed content, is another
    import shutil

    moved = shutil.copytree(parquet, tmp_path / "moved")
    assert build_dataset(dataset_cfg(root=moved)).fingerprint()["digest"] == fp["digest"]
    other = hf_dataset(pets[0]).add_column("label2", [2, 2, 2, 1, 1, 1, 0, 0, 0])
    write_parquet(other, tmp_path / "two")
    one = build_dataset(dataset_cfg(root=tmp_path / "two")).fingerprint()["digest"]
    two = build_dataset(dataset_cfg(root=tmp_path / "two", label_column="label2"))
    assert one != two.fingerprint()["digest"] != fp["digest"] and two.source.labels[0] == 2 and two.source.classes is None
    assert build_dataset(dataset_cfg(root=arrow, split="train")).source.labels == [0]


def test_bad_columns_and_missing_class_names_say_what_to_pass(tmp_path, tiny_checkpoint, pets):
    _, parquet, _ = pets
    with pytest.raises(DatasetError, match=r"no column 'img'\. Its columns: image, label"):
        build_dataset(dataset_cfg(root=parquet, image_column="img"))
    with pytest.raises(DatasetError, match=r"'label' .* holds int64, not images; its image columns: image"):
        build_dataset(dataset_cfg(root=parquet, image_column="label"))
    with pytest.raises(DatasetError, match=r"no Parquet files for split 'validation' \(the splits there: test, train\)"):
        build_dataset(dataset_cfg(root=parquet, split="validation"))
    plain = write_parquet(hf_dataset(pets[0], classlabel=False), tmp_path / "plain")
    with pytest.raises(UserError, match=r"does not name its classes; give them with dataset.classnames=FILE"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=hf", f"dataset.root={plain}"))
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\n")
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=hf", f"dataset.root={plain}", f"dataset.classnames={names}"))
    assert m["n_classes"] == 3 and m["n_images"] == 9
    import datasets

    text = datasets.Dataset.from_dict({"image": [{"bytes": b"x", "path": None}], "label": ["dog"]},
                                      features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}))
    text.to_parquet(str(tmp_path / "text" / "test.parquet"))
    with pytest.raises(DatasetError, match=r"holds class names as text.*pass dataset.classnames=FILE"):
        build_dataset(dataset_cfg(root=tmp_path / "text"))
    assert build_dataset(dataset_cfg(root=tmp_path / "text", classnames=names)).source.labels == [1]
    # shards that name their classes in another order would mix two label orders: refused
    mixed = write_parquet(hf_dataset(pets[0]), tmp_path / "mixed", shards=1)
    other = hf_dataset(pets[0]).cast_column("label", datasets.ClassLabel(names=["dog", "cat", "fox"]))
    other.to_parquet(str(mixed / "data" / "test-00001-of-00002.parquet"))
    with pytest.raises(DatasetError, match=r"name the classes of 'label' differently"):
        build_dataset(dataset_cfg(root=mixed))


HUB_SCRIPT = r"""
import json, sys
from huggingface_hub import constants
from zeroshot.data.hf import HFDataset
from zeroshot.errors import DatasetError
out = {}
constants.HF_HUB_OFFLINE = True  # the cache only, as HF_HUB_OFFLINE=1 makes it
out["cached"] = len(HFDataset("hf-hub:lab/pets@main", "test", "img", "label"))
for spec, split in (("hf-hub:lab/elsewhere", "test"), ("hf-hub:lab/pets", "validation")):
    try:
        HFDataset(spec, split, "img", "label")
    except DatasetError as e:
        out[spec + ":" + split] = str(e)
print(json.dumps(out))
"""


@pytest.mark.cli
def test_the_hub_copy_through_a_local_hub(tmp_path, tiny_checkpoint, pets):
    """uoft-cs/cifar10's layout (an `img` column, plain_text/test-*.parquet): one eval through HF_ENDPOINT, then the
    cache alone (HF_HUB_OFFLINE), and what a repo or split that is not there says."""
    from fakehub import Hub, serve

    folder, _, _ = pets
    hub_copy = write_parquet(hf_dataset(folder, image_column="img"), tmp_path / "hub")
    write_parquet(hf_dataset(folder, image_column="img").select([0]), hub_copy, split="train", shards=1)
    httpd, url = serve()
    try:
        Hub.repos["datasets/lab/pets"] = {f"plain_text/{p.name}": p.read_bytes() for p in (hub_copy / "data").iterdir()}
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
               "PYTHONPATH": str(REPO)}
        r = subprocess.run([sys.executable, "-m", "zeroshot", "eval", "dataset=hf", "dataset.root=hf-hub:lab/pets",
                            "dataset.image_column=img", f"model.checkpoint={tiny_checkpoint}", f"results_dir={tmp_path / 'r'}",
                            f"cache_dir={tmp_path / 'c'}", "num_workers=0", "progress=false", "figures=false"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        record = next((tmp_path / "r").rglob("metrics.json"))
        run = {**json.loads(record.read_text()), "run_dir": str(record.parent)}
        downloaded = {p.name for p in (tmp_path / "hf").rglob("*.parquet")}
        assert downloaded == {"test-00000-of-00002.parquet", "test-00001-of-00002.parquet"}  # not the train split
        r = subprocess.run([sys.executable, "-c", HUB_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        httpd.shutdown()
    want = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={folder}", "cache=false"))
    got, expect = np.load(Path(run["run_dir"]) / "logits.npz"), logits(want)
    assert np.array_equal(got["labels"], expect["labels"]) and np.allclose(got["logits"], expect["logits"], atol=1e-6)
    assert run["dataset_root"].endswith("snapshots/0123456789abcdef0123456789abcdef01234567")
    assert out["cached"] == 9
    assert "not in the Hugging Face cache" in out["hf-hub:lab/elsewhere:test"]
    assert "hf download lab/elsewhere --repo-type dataset" in out["hf-hub:lab/elsewhere:test"]
    assert "no Parquet files for split 'validation'" in out["hf-hub:lab/pets:validation"]


def test_hf_config_declares_its_keys():
    d = OmegaConf.to_container(dataset_cfg(root="x"))
    assert {"image_column", "label_column", "classnames", "split"} <= set(d) and d["image_column"] == "image"


def test_a_named_dataset_from_its_hub_parquet_copy(tmp_path, tiny_checkpoint, monkeypatch):
    """dataset=cifar10 dataset.root=hf-hub:uoft-cs/cifar10: read as its Parquet copy (columns img, label, from the
    config's `hf` entry), with CIFAR-10's own prompts, and not comparable to published numbers with 10 images."""
    import datasets

    from zeroshot.data import hf

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(1)
    jpegs = []
    for _ in names:
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, "JPEG")
        jpegs.append({"bytes": out.getvalue(), "path": None})
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    copy = tmp_path / "uoft-cs--cifar10"
    datasets.Dataset.from_dict({"img": jpegs, "label": list(range(10))}, features=features).to_parquet(
        str(copy / "plain_text" / "test-00000-of-00001.parquet"))
    asked = []
    monkeypatch.setattr(hf, "fetch_from_hub", lambda spec, split: asked.append((spec, split)) or copy)
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=cifar10", "dataset.root=hf-hub:uoft-cs/cifar10"))
    assert asked == [("hf-hub:uoft-cs/cifar10", "test")]
    assert m["dataset"] == "cifar10" and m["prompts"] == "cifar10" and m["n_images"] == 10 and m["n_classes"] == 10
    assert not m["comparable"] and "10 of 10,000" in m["not_comparable_reason"]
    with pytest.raises(DatasetError, match=r"no column 'fine_label'\. Its columns: img, label"):
        build_dataset(compose_dataset("cifar100", "dataset.root=hf-hub:uoft-cs/cifar100"))


def compose_dataset(name, *overrides):
    return make_cfg("eval", f"dataset={name}", *overrides).dataset
