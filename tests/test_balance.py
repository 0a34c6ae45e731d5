"""Issue 22: the image step's costs in metrics.json, and how `num_workers=auto` splits the cores between decoding
workers and the model. Nothing here asserts about speed: only that the numbers are recorded, consistent with
their formulas, and that the workers run with the priority the policy chose."""
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, make_cfg
from datagen import write_imagefolder
from zeroshot.commands.evaluate import evaluate
from zeroshot.data.base import (
    EvalDataset,
    TimedSamples,
    available_cores,
    collate,
    idle_priority,
    scheduling,
)
from zeroshot.errors import BadImageError, ConfigError
from zeroshot.features.cache import ImageStep
from zeroshot.features.extract import Encoding, compute
from zeroshot.models.transforms import image_transform
from zeroshot.pipeline import loader_policy
from zeroshot.settings import check_settings

# what a worker that inherits this process's scheduling reports ("normal" unless the tests run under nice or chrt)
OWN = ("normal" if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) == os.SCHED_OTHER
       and os.getpriority(os.PRIO_PROCESS, 0) == 0 else None)
KEYS = ("decode_core_ms_per_image", "model_core_ms_per_image", "model_threads", "decode_workers", "decode_scheduler",
        "cores", "image_step_bound_images_per_s", "image_step_images_per_s", "image_step_share_of_bound")


def eval_cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("eval", "progress=false", "batch_size=4", "dataset=imagefolder", f"dataset.root={tmp_path / 'imgs'}",
                    *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


def test_metrics_json_records_the_image_step_costs_and_their_bound(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=5)
    m = evaluate(eval_cfg(tmp_path, tiny_checkpoint, "num_workers=2"))
    saved = json.loads((Path(m["run_dir"]) / "metrics.json").read_text())
    assert all(k in saved for k in KEYS), [k for k in KEYS if k not in saved]
    n = saved["n_images"]
    assert n == 10 and saved["decode_workers"] == 2 and saved["decode_scheduler"] == "idle"  # auto on the CPU: idle
    assert saved["cores"] == available_cores() and saved["model_threads"] == torch.get_num_threads()
    assert saved["decode_core_ms_per_image"] > 0 and saved["model_core_ms_per_image"] > 0
    model_ms = 1000 * saved["image_encode_seconds"] * saved["model_threads"] / n
    assert saved["model_core_ms_per_image"] == pytest.approx(model_ms, rel=1e-9)
    bound = 1000 * saved["cores"] / (saved["decode_core_ms_per_image"] + saved["model_core_ms_per_image"])
    assert saved["image_step_bound_images_per_s"] == pytest.approx(bound, rel=1e-9)
    rate = n / (saved["data_wait_seconds"] + saved["image_encode_seconds"])
    assert saved["image_step_images_per_s"] == pytest.approx(rate, rel=1e-9)
    assert saved["image_step_share_of_bound"] == pytest.approx(rate / bound, rel=1e-9)

    # a rerun takes every image from the cache: no step to measure, so the costs are null, not zero or made up
    again = evaluate(eval_cfg(tmp_path, tiny_checkpoint, "num_workers=0"))
    assert again["images_from_cache"] == 10 and again["decode_core_ms_per_image"] is None
    assert again["image_step_bound_images_per_s"] is None and again["image_step_share_of_bound"] is None


def test_workers_run_with_the_priority_the_policy_chose(tmp_path, tiny_checkpoint):
    write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=3)
    normal = evaluate(eval_cfg(tmp_path, tiny_checkpoint, "num_workers=1", "worker_priority=normal", "cache=false"))
    assert normal["decode_workers"] == 1 and normal["decode_scheduler"] == (OWN or normal["decode_scheduler"])
    auto = evaluate(eval_cfg(tmp_path, tiny_checkpoint, "cache=false"))  # num_workers=auto, worker_priority=auto
    assert auto["decode_workers"] == min(8, available_cores()) and auto["decode_scheduler"] == "idle"
    main = evaluate(eval_cfg(tmp_path, tiny_checkpoint, "num_workers=0", "cache=false"))
    assert main["decode_workers"] == 0 and main["decode_scheduler"] == "main process"


class _Where(torch.utils.data.Dataset):
    """Each sample says how the process that fetched it is scheduled."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return scheduling(), os.getpriority(os.PRIO_PROCESS, 0)


def scheduling_of(loader) -> str:
    return next(iter(loader))[0]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_worker_reports_its_scheduler_policy():
    assert scheduling() == "main process"
    loader = torch.utils.data.DataLoader(_Where(), batch_size=None, num_workers=1, worker_init_fn=idle_priority)
    assert [where for where, _ in loader] == ["idle", "idle"]
    plain = torch.utils.data.DataLoader(_Where(), batch_size=None, num_workers=1)
    assert [where for where, _ in plain] == [OWN or scheduling_of(plain)] * 2
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the main process keeps its own priority


def test_loader_policy_splits_the_cores():
    cores = available_cores()
    cfg = OmegaConf.create({"num_workers": "auto", "worker_priority": "auto"})
    assert loader_policy(cfg, torch.device("cpu")) == (min(8, cores), "idle")
    assert loader_policy(cfg, torch.device("cuda")) == (max(1, min(8, cores - 1)), "normal")  # the GPU keeps the old rule
    assert loader_policy(OmegaConf.create({"num_workers": 3, "worker_priority": "auto"}), torch.device("cpu")) == (3, "idle")
    normal = OmegaConf.create({"num_workers": "auto", "worker_priority": "normal"})
    assert loader_policy(normal, torch.device("cpu")) == (max(1, min(8, cores - 1)), "normal")
    with pytest.raises(ConfigError, match="worker_priority='lowest' is not a choice"):
        check_settings(OmegaConf.create({"worker_priority": "lowest"}))


def test_image_step_formula_and_ranks_combined():
    step = ImageStep(wait_s=1.0, encode_s=3.0, decode_cpu_s=0.5, decoded=100, encoded=100, threads=2, workers=2,
                     scheduler="idle", cores=2)
    m = step.metrics()
    assert m["decode_core_ms_per_image"] == pytest.approx(5.0) and m["model_core_ms_per_image"] == pytest.approx(60.0)
    assert m["image_step_bound_images_per_s"] == pytest.approx(2000 / 65) and m["image_step_images_per_s"] == 25.0
    assert m["image_step_share_of_bound"] == pytest.approx(25.0 / (2000 / 65))
    other = ImageStep(wait_s=2.0, encode_s=2.0, decode_cpu_s=1.5, decoded=100, encoded=100, threads=2, workers=2,
                      scheduler="idle", cores=2)
    both = ImageStep.combine([step, other])
    assert (both.wait_s, both.encode_s, both.decoded, both.encoded) == (2.0, 3.0, 200, 200)
    assert both.metrics()["decode_core_ms_per_image"] == pytest.approx(10.0)
    assert ImageStep.combine([]).metrics()["image_step_bound_images_per_s"] is None


def folder_dataset(root: Path) -> EvalDataset:
    from zeroshot.data.readers import build_dataset

    cfg = OmegaConf.load(REPO / "configs" / "dataset" / "imagefolder.yaml")
    cfg.root = str(root)
    return build_dataset(cfg, image_transform(32))


def test_each_sample_carries_its_decode_cost(tmp_path):
    ds = folder_dataset(write_imagefolder(tmp_path / "imgs", ["a", "b"], per_class=2))
    timed = TimedSamples(ds)
    (image, label, index), cost = timed[1]
    assert image.shape == (3, 32, 32) and index == 1 and cost > 0
    batch = collate([timed[i] for i in range(4)])
    assert batch.images.shape == (4, 3, 32, 32) and batch.samples == 4 and batch.skipped == 0
    assert batch.decode_cpu_s > 0 and batch.scheduler == "main process"


def test_a_bad_image_in_an_idle_worker_is_one_error_naming_its_file(tmp_path, tiny_vit):
    root = write_imagefolder(tmp_path / "imgs", ["a", "b"], per_class=3)
    (root / "b" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    ds = folder_dataset(root)
    with pytest.raises(BadImageError) as e:
        compute(tiny_vit, ds, list(range(len(ds))), None, Encoding(2, 2, "cpu", 64, worker_priority="idle"))
    assert "zz_broken.jpg" in str(e.value) and "\n" not in str(e.value) and "DataLoader worker" not in str(e.value)
