"""The trust promise under hostile files and faults (docs/trust.md): no code from data, checksummed caches,
images listed once, special files never opened, undeclared config keys refused, files others can read."""
import json
import os
from pathlib import Path

import pytest

from conftest import QUIET, cli, make_cfg

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ 1. no code from data

def _custom_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder, marker = tmp_path / "evil_model", tmp_path / "MARKER"
    folder.mkdir()
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n")
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder, marker


@pytest.mark.cli
def test_custom_code_never_runs_even_with_yes_on_stdin(tmp_path):
    folder, marker = _custom_code_folder(tmp_path)
    r = cli(code=f"import zeroshot; zeroshot.load({str(folder)!r}, device='cpu', backend='transformers')",
            stdin="y\ny\ny\n", timeout=180)
    assert not marker.exists(), "the model folder's code ran"
    assert "CheckpointError" in r.stderr and str(folder) in r.stderr and "auto_map" in r.stderr, r.stderr[-2000:]
    assert "AutoModel -> modeling_evil.EvilModel" in r.stderr or "AutoConfig -> configuration_evil.EvilConfig" in r.stderr
    assert "[y/N]" not in r.stdout + r.stderr


def test_loaders_pass_trust_remote_code_false():
    """Every from_pretrained call in the package says trust_remote_code=False itself (never the library default)."""
    import ast

    calls = []
    for path in (REPO / "zeroshot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                kw = {k.arg: k.value for k in node.keywords}
                calls.append((path.name, node.lineno))
                assert isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is False, \
                    f"{path}:{node.lineno} calls from_pretrained without trust_remote_code=False"
    assert len(calls) >= 3


# ------------------------------------------------------------------------------ 2. checksummed caches

def _eval_cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("eval", *QUIET, "batch_size=8", *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


def _garble_in_place(path: Path, tensor) -> None:
    """Overwrite the tensor's bytes inside the torch.save zip with other bytes of the same length: same size,
    still a valid zip, loads without complaint."""
    raw = bytearray(path.read_bytes())
    data = tensor.contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes()
    at = raw.find(data)
    assert at >= 0
    raw[at:at + len(data)] = data[::-1]
    path.write_bytes(bytes(raw))


def test_cache_garbled_in_place_is_caught_and_recomputed(tmp_path, tiny_checkpoint, capsys):
    import torch

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate

    root = write_imagefolder(tmp_path / "f", ["cat", "dog", "fox"], per_class=2)
    base = ["dataset=imagefolder", f"dataset.root={root}"]
    uncached = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, *base, "cache=false"))
    evaluate(_eval_cfg(tmp_path, tiny_checkpoint, *base))
    chunks = list((tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    texts = list((tmp_path / "cache" / "text_features").rglob("*.pt"))
    assert len(chunks) == 1 and texts
    for path in chunks + texts:
        entry = torch.load(path, weights_only=True)
        size = path.stat().st_size
        _garble_in_place(path, entry["features"])
        assert path.stat().st_size == size
        assert not torch.equal(torch.load(path, weights_only=True)["features"], entry["features"])
    capsys.readouterr()
    rerun = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, *base))
    warned = capsys.readouterr().err  # warnings, through the zeroshot logger
    for path in chunks + texts:
        assert f"{path} fails its checksum" in warned
    for key in ("top1", "top5", "per_class_top1"):
        if key in uncached:
            assert rerun[key] == uncached[key], key
    run = Path(rerun["run_dir"])
    import numpy as np

    np.testing.assert_array_equal(np.load(run / "logits.npz")["logits"],
                                  np.load(Path(uncached["run_dir"]) / "logits.npz")["logits"])


# ------------------------------------------------------------------------------ 3. images listed once

def test_directory_symlink_loop_lists_each_image_once(tmp_path, capsys):
    from datagen import write_imagefolder
    from zeroshot.data.readers import build_dataset
    from conftest import dataset_config

    root = write_imagefolder(tmp_path / "f", ["cat", "dog"], per_class=1)
    (root / "cat" / "loop").symlink_to(root / "cat")  # a link to its own parent: a cycle
    (root / "dog" / "up").symlink_to(root)  # a link back to the root: a cycle through every class
    (root / "dog" / "again.png").symlink_to(next((root / "dog").glob("*.png")))  # the same file twice
    outside = write_imagefolder(tmp_path / "elsewhere", ["more"], per_class=1) / "more"
    (root / "cat" / "more").symlink_to(outside)  # a link out of the tree (another disk): followed
    (outside / "back").symlink_to(root / "cat")  # ... whose link back into the tree is a cycle
    ds = build_dataset(dataset_config("imagefolder", root=str(root)))
    assert len(ds) == 3 and sorted(ds.labels) == [0, 0, 1]
    err = capsys.readouterr().err
    assert "loop" in err and "up" in err and "again.png" in err and "listed once" in err


def test_listing_without_links_is_torchvisions(tmp_path):
    """Same files, same order, same labels as torchvision's make_dataset (cache keys and predictions keep their order)."""
    import torchvision.datasets as tvd

    from zeroshot.data.listing import list_images

    for p in ["a/x.png", "a/sub/y.png", "a/sub-2/q.png", "a/z.png", "a/sub/deeper/w.png", "b/1.png", "b/B.PNG",
              "b/sub/2.jpg", "b/notes.txt"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    classes = {"a": 0, "b": 1}
    assert list_images(str(tmp_path), classes) == tvd.folder.make_dataset(str(tmp_path), classes, tvd.folder.IMG_EXTENSIONS)


def test_duplicate_class_names_name_both_positions(tmp_path, tiny_checkpoint):
    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.errors import PromptError

    root = write_imagefolder(tmp_path / "f", ["a", "b", "c"], per_class=1)
    names = tmp_path / "names.txt"
    names.write_text("tench\ngoldfish\ntench\n")
    base = ["dataset=imagefolder", f"dataset.root={root}", f"dataset.classnames={names}", "cache=false"]
    with pytest.raises(PromptError, match=r"'tench': labels 0 and 2.*allow_duplicate_classnames=true"):
        evaluate(_eval_cfg(tmp_path, tiny_checkpoint, *base))
    assert evaluate(_eval_cfg(tmp_path, tiny_checkpoint, *base, "dataset.allow_duplicate_classnames=true"))["n_images"] == 3


def test_published_imagenet_names_keep_their_own_duplicates():
    """OpenAI's ImageNet list repeats 'missile' and 'sunglasses'; its prompt set says so, so it runs as published."""
    from zeroshot.pipeline import check_duplicate_names
    from zeroshot.prompts.sets import load_prompt_set

    pset = load_prompt_set(name="imagenet")
    assert sorted(pset.duplicate_classnames) == ["missile", "sunglasses"]
    check_duplicate_names(pset.classnames, "prompt set 'imagenet'", pset.duplicate_classnames, False)
    with pytest.raises(Exception, match="'missile': labels 657 and 744"):
        check_duplicate_names(pset.classnames, "class-names file x", [], False)


# ------------------------------------------------------------------------------ 4. special files

@pytest.mark.cli
def test_fifo_in_image_folder_is_refused_or_skipped_never_opened(tmp_path):
    """In a subprocess with a timeout, so this test cannot hang: before the fix, reading the FIFO blocked forever."""
    from datagen import write_imagefolder

    root = write_imagefolder(tmp_path / "f", ["a", "b"], per_class=2)
    os.mkfifo(root / "a" / "x.jpg")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    code = (
        "from zeroshot.data.readers import build_dataset, CSVDataset\n"
        "from zeroshot.data.base import EvalDataset\n"
        "from conftest import dataset_config\n"
        "from zeroshot.errors import DatasetError\n"
        f"cfg = dataset_config('imagefolder', root={str(root)!r})\n"
        "try:\n    build_dataset(cfg)\nexcept DatasetError as e:\n    print('REFUSED', e)\n"
        f"ds = build_dataset(dataset_config('imagefolder', root={str(root)!r}), skip_bad_images=True)\n"
        "print('LISTED', len(ds), [ds[i][1] for i in range(len(ds))])\n"
        # a FIFO a CSV lists: stat'ed at read time, never opened
        f"ds = EvalDataset(CSVDataset([{str(pipe)!r}], [0]), ['a'], 'csv')\n"
        "print('CSV', ds[0].message)\n"
        "ds.skip_bad_images = True\n"
        "print('CSV-SKIPPED', ds[0])\n")
    r = cli(code=code, timeout=120, env={"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"REFUSED {root / 'a' / 'x.jpg'} is a FIFO" in r.stdout
    assert "LISTED 4 [0, 0, 1, 1]" in r.stdout and "x.jpg (a FIFO (named pipe))" in r.stderr
    assert f"{pipe} is a FIFO" in r.stdout and "CSV-SKIPPED None" in r.stdout


# ------------------------------------------------------------------------------ 5. what a run records is what it ran

@pytest.mark.cli
def test_undeclared_keys_are_errors_and_tags_are_recorded(tmp_path, tiny_checkpoint):
    from datagen import write_imagefolder

    root = write_imagefolder(tmp_path / "f", ["cat", "dog"], per_class=1)
    base = ["dataset=imagefolder", f"dataset.root={root}", f"model.checkpoint={tiny_checkpoint}",
            f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false",
            "figures=false"]
    for added, named, close in (("+prompts.templaets=x", "prompts.templaets", "prompts.templates"),
                                ("+experiment_name=demo", "experiment_name", None)):
        r = cli("eval", *base, added)
        assert r.returncode == 1, (added, r.stderr[-2000:])
        line, = r.stderr.strip().splitlines()
        assert f"unknown setting {named!r}" in line and "tags" in line, line
        assert close is None or f"did you mean {close!r}" in line, line
    assert not (tmp_path / "results").exists()
    r = cli("eval", *base, "+tags.project=demo")
    assert r.returncode == 0, r.stderr[-2000:]
    import yaml

    recorded = yaml.safe_load(next((tmp_path / "results").rglob("config.yaml")).read_text())
    assert recorded["tags"] == {"project": "demo"}


def test_config_yaml_names_the_weights_that_ran(tmp_path, tiny_checkpoint):
    """model.checkpoint replaced the default config's model.name: config.yaml must not say ViT-B/32 beside it."""
    import yaml

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate

    root = write_imagefolder(tmp_path / "f", ["cat", "dog"], per_class=1)
    m = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={root}", "cache=false"))
    text = (Path(m["run_dir"]) / "config.yaml").read_text()
    recorded = yaml.safe_load(text)
    assert recorded["model"]["name"] is None and recorded["model"]["checkpoint"] == str(tiny_checkpoint)
    assert text.startswith("# model.name (ViT-B/32) emptied: model.checkpoint replaced it")


# ------------------------------------------------------------------------------ 7. every bad value a UserError

def test_calibration_fraction_out_of_range_is_a_user_error():
    from omegaconf import OmegaConf

    from zeroshot.errors import UserError
    from zeroshot.metrics.calibration import held_out_split
    from zeroshot.settings import check_settings

    with pytest.raises(UserError, match=r"calibration.fraction=1.5 is out of range"):
        check_settings(OmegaConf.create({"calibration": {"fraction": 1.5}}))
    with pytest.raises(UserError, match="calibration.fraction"):
        held_out_split(10, 1.5, 0)


def test_huge_preprocess_size_in_open_clip_config_is_one_line(tmp_path):
    from zeroshot.errors import UserError
    from zeroshot.models.hub import read_folder

    (tmp_path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 32}, "preprocess_cfg": {"size": 10**9, "mean": [0.5] * 3, "std": [0.5] * 3}}))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"preprocess_cfg.size\): image size 1000000000 is beyond"):
        read_folder(tmp_path)


@pytest.mark.cli
def test_compare_on_a_truncated_logits_file_is_one_line(tmp_path):
    from test_compare import synthetic, write_run

    a, b = synthetic("A", seed=1), synthetic("B", seed=2)
    b.labels = a.labels
    write_run(tmp_path, a, "one", "2026-01-01_00-00-00", "aa" * 32)
    damaged = write_run(tmp_path, b, "two", "2026-01-01_00-00-00", "bb" * 32) / "logits.npz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    r = cli("compare", str(tmp_path), f"output_dir={tmp_path / 'out'}", "compare.n_boot=10")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"{damaged} is damaged" in r.stderr
    from zeroshot.errors import ReportError
    from zeroshot.report.compare import load_run

    with pytest.raises(ReportError, match="is damaged"):
        load_run(damaged.parent, "two")


def test_truncated_cifar_batch_is_one_line(tmp_path):
    from datagen import write_cifar
    from zeroshot.data.readers import build_dataset
    from zeroshot.errors import DatasetError
    from conftest import dataset_config

    root = write_cifar(tmp_path)
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:500])
    cfg = dataset_config("cifar10", root=str(root))
    import torchvision.datasets.cifar as tv_cifar

    orig = tv_cifar.CIFAR10._check_integrity
    tv_cifar.CIFAR10._check_integrity = lambda self: True  # the fixture is not the real CIFAR: only its md5 check
    try:
        with pytest.raises(DatasetError, match="cannot be read.*damaged"):
            build_dataset(cfg)
    finally:
        tv_cifar.CIFAR10._check_integrity = orig


def test_a_cifar_batch_that_names_code_is_refused_unrun(tmp_path, monkeypatch):
    """CIFAR's batches are pickles; one whose pickle calls a function is refused before anything runs."""
    import pickle

    import torchvision.datasets.cifar as tv_cifar

    # the fixture files are not the real CIFAR, so their md5 differs: bypass that check, nothing else
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())

    from datagen import write_cifar
    from conftest import dataset_config
    from zeroshot.data.readers import build_dataset
    from zeroshot.errors import DatasetError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    root = write_cifar(tmp_path)
    ds = build_dataset(dataset_config("cifar10", root=str(root)))  # the real layout reads as before
    assert len(ds) == 23
    batch = root / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": Payload(), "labels": [0]}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"test_batch names (io|builtins)\.open.*refused unread"):
        build_dataset(dataset_config("cifar10", root=str(root)))
    assert not marker.exists()


# ------------------------------------------------------------------------------ 9. files others can read

def test_results_and_caches_get_the_umask_mode(tmp_path, tiny_checkpoint):
    import stat

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.files import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "x.json", "w") as f:
            f.write("{}")
        assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
        os.umask(0o027)
        with atomic_write(tmp_path / "y.json", "w") as f:
            f.write("{}")
        assert stat.S_IMODE((tmp_path / "y.json").stat().st_mode) == 0o640
        os.umask(0o022)
        root = write_imagefolder(tmp_path / "f", ["cat", "dog"], per_class=1)
        m = evaluate(_eval_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={root}", "figures=false"))
    finally:
        os.umask(old)
    written = [p for p in [*Path(m["run_dir"]).iterdir(), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert any(p.name == "metrics.json" for p in written) and any(p.suffix == ".pt" for p in written)
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
