"""fast_decode=true: JPEGs at least twice the model's input decode at a reduced DCT scale (data/base.py's DraftLoader);
the exact decode stays the default. Both branches, the pixels' distance between them, and the feature cache keeping
them apart. Nothing here is timed (the speed is in benchmarks/round4.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroshot.data.base import DraftLoader
from zeroshot.models.transforms import image_transform


def _photo_like(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth shapes plus grain, so that JPEG and its scaled decode behave as on a photograph, not on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], -1) * 90 + 128
    return Image.fromarray(np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8))


def _exact(path) -> Image.Image:
    from torchvision.datasets.folder import default_loader

    return default_loader(str(path))


@pytest.fixture
def images(tmp_path):
    paths = {"large": tmp_path / "large.jpg", "small": tmp_path / "small.jpg", "png": tmp_path / "large.png",
             "gray": tmp_path / "gray.jpg"}
    _photo_like(1000, 700).save(paths["large"], quality=90)
    _photo_like(400, 300, 1).save(paths["small"], quality=90)
    _photo_like(1000, 700, 2).save(paths["png"])
    _photo_like(900, 600, 3).convert("L").save(paths["gray"], quality=90)
    return paths


def test_large_jpegs_decode_at_a_reduced_scale_that_keeps_the_input_size(images):
    fast = DraftLoader(224)
    assert fast(images["large"]).size == (500, 350)  # 1/2: 1/4 would give 175 < 224 rows
    assert _exact(images["large"]).size == (1000, 700)
    gray = fast(images["gray"])
    assert gray.mode == "RGB" and gray.size == (450, 300)
    assert DraftLoader(100)(images["large"]).size == (250, 175)  # 1/4 where that still covers the input


def test_small_jpegs_and_other_formats_decode_exactly(images):
    for key in ("small", "png"):  # 400x300 is under twice 224 on a side: no scaled decode
        assert np.array_equal(np.asarray(DraftLoader(224)(images[key])), np.asarray(_exact(images[key])))


def test_fast_decode_pixels_stay_close_to_the_exact_path(images):
    """After the model's transform the two decodes differ, but little (the benchmark reports it on real JPEGs)."""
    t = image_transform(224)
    a, b = t(DraftLoader(224)(images["large"])), t(_exact(images["large"]))
    assert a.shape == b.shape == (3, 224, 224)
    diff = (a - b).abs()
    assert 0 < diff.mean().item() < 0.05 and torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) > 0.99


def test_dataset_takes_the_fast_decoder_only_where_it_reads_files(tmp_path, images):
    from zeroshot.data.base import EvalDataset
    from zeroshot.data.readers import CSVDataset

    ds = EvalDataset(CSVDataset([str(images["large"])], [0]), ["a"], "csv")
    assert ds.decoder is None and ds.source[0][0].size == (1000, 700)  # the exact default
    assert ds.decode_at_least(224) and ds.decoder == repr(DraftLoader(224))
    assert ds.source[0][0].size == (500, 350)
    no_loader = EvalDataset([(Image.new("RGB", (8, 8)), 0)], ["a"], "list")
    assert not no_loader.decode_at_least(224) and no_loader.decoder is None


def test_eval_with_and_without_fast_decode(tmp_path, tiny_checkpoint, images):
    """Both branches through the eval: the option recorded, features cached apart (the second run encodes its own),
    and the logits close to the exact run's."""
    from test_eval import run_cfg

    from zeroshot.commands.evaluate import evaluate

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            _photo_like(320, 240, seed=10 * ord(c) + i).save(root / c / f"{i}.jpg", quality=90)
    runs = {}
    for fast in ("false", "true", "true"):
        m = evaluate(run_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={root}",
                             f"fast_decode={fast}"))
        runs.setdefault(fast, []).append(m)
    exact, fast_runs = runs["false"][0], runs["true"]
    assert exact["images_from_cache"] == 0 and fast_runs[0]["images_from_cache"] == 0  # not the exact run's features
    assert fast_runs[1]["images_from_cache"] == 4  # its own, cached
    config = (Path(fast_runs[0]["run_dir"]) / "config.yaml").read_text()
    assert "fast_decode: true" in config
    la = np.load(Path(exact["run_dir"]) / "logits.npz")["logits"]
    lb = np.load(Path(fast_runs[0]["run_dir"]) / "logits.npz")["logits"]
    assert not np.array_equal(la, lb) and np.abs(la - lb).max() < 0.1 * np.abs(la).max()


def test_fast_decode_must_be_a_boolean(tmp_path, tiny_checkpoint):
    from test_eval import run_cfg

    from zeroshot.errors import ConfigError
    from zeroshot.settings import check_settings  # what the CLI's one dispatch checks before any work

    with pytest.raises(ConfigError, match="fast_decode='yes' is not a choice"):
        check_settings(run_cfg(tmp_path, tiny_checkpoint, "fast_decode=yes"))
