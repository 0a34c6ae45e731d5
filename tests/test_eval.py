"""End to end: real configs composed by Hydra, a tiny CLIP in OpenAI's format, data in real on-disk formats."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchvision.datasets.cifar as tv_cifar

from zeroshot.errors import DatasetError
from zeroshot.commands.evaluate import evaluate
from zeroshot.errors import PromptError
from conftest import QUIET, cli, make_cfg, shared_path
from datagen import write_cifar, write_csv, write_idx, write_imagefolder


def run_cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("eval", *QUIET, "batch_size=8", *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


@pytest.fixture
def no_cifar_checksum(monkeypatch):
    """The fixture files are not the real CIFAR, so their md5 differs: bypass that check, nothing else."""
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())


def brute_force(logits: np.ndarray, labels: np.ndarray) -> dict:
    n, c = logits.shape
    top1 = sum(int(np.argmax(logits[i]) == labels[i]) for i in range(n)) / n
    top5 = sum(int(labels[i] in sorted(range(c), key=lambda j: -logits[i, j])[:5]) for i in range(n)) / n
    recalls = []
    for k in range(c):
        rows = [i for i in range(n) if labels[i] == k]
        if rows:
            recalls.append(sum(int(np.argmax(logits[i]) == k) for i in rows) / len(rows))
    return {"top1": top1, "top5": top5, "mean_per_class_recall": sum(recalls) / len(recalls)}


def check_run(metrics: dict, n_images: int, n_classes: int) -> Path:
    run = Path(metrics["run_dir"])
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_per_class_recall", "n_images", "n_classes", "n_templates", "model",
                "checkpoint_sha256", "dataset", "split", "prompts", "precision", "device", "wall_seconds", "versions"):
        assert key in saved, key
    assert saved["n_images"] == n_images and saved["n_classes"] == n_classes
    z = np.load(run / "logits.npz")
    expected = brute_force(z["logits"], z["labels"])
    for key, value in expected.items():
        assert saved[key] == pytest.approx(value, abs=1e-12), key
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == n_images and (preds["prediction"].to_numpy() == z["logits"].argmax(1)).all()
    assert len(pd.read_csv(run / "per_class.csv")) == n_classes
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "config.yaml"):
        assert (run / name).stat().st_size > 0
    return run


def test_cifar10_pickle_batches(tmp_path, tiny_checkpoint, no_cifar_checksum):
    write_cifar(tmp_path / "cifar10", n=23)
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=cifar10", f"dataset.root={tmp_path / 'cifar10'}"))
    run = check_run(m, 23, 10)
    assert m["n_templates"] == 18 and m["prompts"] == "cifar10"
    # the run directory names what was evaluated: dataset / architecture_file_sha256[:8] / prompts-hash
    assert run.parts[-4] == "cifar10" and run.parts[-3] == f"custom_tiny-vit_{m['checkpoint_sha256'][:8]}"
    assert run.parts[-2] == f"cifar10-{m['prompts_hash'][:8]}"
    assert m["model"] == "tiny-vit.pt" and m["model_release"] is None and m["activation_from"] == "assumed"
    assert m["dataset_fingerprint_kind"] == "packed" and len(m["dataset_fingerprint"]) == 64


def test_cifar100_and_mnist_idx(tmp_path, tiny_checkpoint, no_cifar_checksum):
    write_cifar(tmp_path / "c100", n=40, hundred=True)
    check_run(evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=cifar100", f"dataset.root={tmp_path / 'c100'}")), 40, 100)
    write_idx(tmp_path / "mnist", n=31)
    check_run(evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=mnist", f"dataset.root={tmp_path / 'mnist'}")), 31, 10)


def test_imagefolder_and_csv(tmp_path, tiny_checkpoint):
    classes = ["golden_retriever", "tabby_cat", "red_fox"]
    write_imagefolder(tmp_path / "folder", classes, per_class=3)
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'folder'}"))
    check_run(m, 9, 3)
    preds = pd.read_csv(Path(m["run_dir"]) / "predictions.csv")
    assert set(preds["label_name"]) == {"golden retriever", "tabby cat", "red fox"}
    assert preds["path"].str.endswith(".png").all()

    csv = write_csv(tmp_path / "csvdata", classes, per_class=2)
    check_run(evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=csv", f"dataset.path={csv}")), 6, 3)


def test_classnames_file_for_id_folders(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "ids", ["n001", "n002"], per_class=2)
    names = tmp_path / "names.txt"
    names.write_text("sea otter\nsnow leopard\n")
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'ids'}",
                         f"dataset.classnames={names}"))
    assert set(pd.read_csv(Path(m["run_dir"]) / "predictions.csv")["label_name"]) == {"sea otter", "snow leopard"}


def test_templates_from_command_line_and_file(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "f", ["a", "b"], per_class=2)
    base = ["dataset=imagefolder", f"dataset.root={tmp_path / 'f'}"]
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, 'prompts.templates=["a {}.","the {}!"]'))
    assert m["n_templates"] == 2
    tfile = tmp_path / "t.txt"
    tfile.write_text("one {}\ntwo {}\nthree {}\n")
    assert evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, f"prompts.file={tfile}"))["n_templates"] == 3


def test_runs_never_overwrite(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "f", ["a", "b"], per_class=1)
    cfg = run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'f'}")
    dirs = {evaluate(cfg)["run_dir"] for _ in range(3)}
    assert len(dirs) == 3 and all((Path(d) / "metrics.json").exists() for d in dirs)


def test_bad_images_named_or_skipped(tmp_path, tiny_checkpoint):
    root = write_imagefolder(tmp_path / "f", ["a", "b"], per_class=2)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    base = ["dataset=imagefolder", f"dataset.root={root}"]
    with pytest.raises(Exception, match="broken.png"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, "cache=false"))
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("metrics.json"))
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, "skip_bad_images=true", "cache=false"))
    assert m["skipped_images"] == 1 and m["n_images"] == 4

    only_bad = tmp_path / "bad"
    for c in ("a", "b"):
        (only_bad / c).mkdir(parents=True)
        (only_bad / c / "x.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="No readable images"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={only_bad}",
                         "skip_bad_images=true", "cache=false", f"results_dir={tmp_path / 'bad_results'}"))
    assert not (tmp_path / "bad_results").exists()


def test_bad_input_fails_before_encoding(tmp_path, tiny_checkpoint, no_cifar_checksum):
    write_cifar(tmp_path / "c", n=5)
    base = ["dataset=cifar10", f"dataset.root={tmp_path / 'c'}"]
    with pytest.raises(PromptError, match="100 class names.*10 classes"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, "prompts=cifar100"))
    with pytest.raises(PromptError, match=r"exactly one '\{\}'"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, 'prompts.templates=["no slot"]'))
    with pytest.raises(PromptError, match="Available: .*cifar10"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, *base, "prompts.name=nonsense"))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path / 'empty'}"))
    with pytest.raises(DatasetError, match="Expected layout"):
        evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=cifar100", f"dataset.root={tmp_path / 'none'}",
                         "dataset.download=false"))
    assert not (tmp_path / "results").exists()


@pytest.mark.cli
def test_cli_multirun_two_datasets(tmp_path, tiny_checkpoint):
    write_idx(tmp_path / "mnist", n=7)
    write_idx(tmp_path / "fashion_mnist", n=5, name="FashionMNIST")
    r = cli("eval", "-m", "dataset=mnist,fashion_mnist", f"model.checkpoint={tiny_checkpoint}", f"data_dir={tmp_path}",
            "dataset.download=false", f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}",
            "num_workers=0", "progress=false")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(json.loads(p.read_text())["dataset"] for p in (tmp_path / "res").rglob("metrics.json"))
    assert runs == ["fashion_mnist", "mnist"], runs
    assert r.stdout.count("top1") == 2


@pytest.mark.cli
def test_cli_help_lists_groups_and_unknown_choices():
    r = cli("eval", "--help")
    assert r.returncode == 0
    for text in ("model:", "vit_b32", "rn50x64", "dataset:", "cifar100", "imagefolder", "prompts:", "imagenet_7"):
        assert text in r.stdout, text
    r = cli("eval", "model=vit_huge")
    assert r.returncode != 0 and "vit_b32" in (r.stdout + r.stderr)
    r = cli("frobnicate")
    assert r.returncode == 2 and "eval" in r.stderr


@pytest.mark.slow
def test_real_cifar10_jpegs_and_real_mnist(tmp_path, tiny_checkpoint):
    """The real files in ../shared/data run through the real loaders (random weights: chance accuracy)."""
    jpegs = shared_path("data", "cifar10-test")
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={jpegs}", "batch_size=256"))
    check_run(m, 10_000, 10)
    mnist = shared_path("data", "mnist")
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=mnist", f"dataset.root={mnist}", "dataset.download=false",
                         "batch_size=256"))
    check_run(m, 10_000, 10)


def test_imagenet_wnid_folders(tmp_path, tiny_checkpoint):
    """ImageNet val as 1000 class folders named by wnid, with OpenAI's names and the 7-template subset."""
    from PIL import Image

    from zeroshot.data.imagenet import wnid_lists

    val = tmp_path / "imagenet" / "val"
    pixel = Image.new("RGB", (8, 8), (120, 30, 200))
    for wnid in wnid_lists()["imagenet"]:
        (val / wnid).mkdir(parents=True)
        pixel.save(val / wnid / "ILSVRC2012_val_0.png")
    m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagenet", f"dataset.root={tmp_path / 'imagenet'}",
                         "prompts=imagenet_7", "batch_size=250"))
    assert m["n_classes"] == 1000 and m["n_templates"] == 7 and m["prompts"] == "imagenet_simple_7"
    check_run(m, 1000, 1000)

    # torchvision's own layout: meta.bin (wnid -> names, val wnids) beside val/<wnid>/ is read by tvd.ImageNet
    import torch
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset

    wnids = wnid_lists()["imagenet"]
    torch.save(({w: (f"name {w}",) for w in wnids}, wnids), tmp_path / "imagenet" / "meta.bin")
    ds = build_dataset(OmegaConf.create({"name": "imagenet", "kind": "imagenet", "root": str(tmp_path / "imagenet"),
                                         "split": "test"}))
    assert type(ds.source).__name__ == "ImageNet" and len(ds) == 1000 and ds.classes is None


def test_the_csv_writer_writes_the_bytes_pandas_wrote(tmp_path):
    """per_class.csv and predictions.csv are written without pandas now; what readers of older runs parse is
    unchanged: floats, NaN, ints, booleans, quotes, commas, newlines and non-ASCII, byte for byte."""
    import numpy as np
    import pandas as pd

    from zeroshot.files import write_columns

    columns = {"class_index": np.arange(6), "class": ["a", 'say "hi"', "b, c", "line\nbreak", "ünï", ""],
               "support": np.array([3, 0, 1, 2, 5, 7]),
               "accuracy": np.array([1 / 3, np.nan, 1.0, 0.1 + 0.2, 1e-20, 12345678.9]),
               "flag": [True, False, True, False, True, False],
               "single": np.array([1 / 3, 0.1, np.nan, 2.0, 1e-8, 7.25], dtype=np.float32),
               "listed": [0.5, float("nan"), 1 / 7, 3.0, -0.0, 1e300], "top5": ["1 2 3", "0", "", " ", "x", "5 4"]}
    write_columns(tmp_path / "ours.csv", columns)
    pd.DataFrame(columns).to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
