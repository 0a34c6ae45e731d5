"""Suites: a named list of models x datasets (configs/suite/*.yaml), run as one sweep for a report."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from .datasets import DatasetError
from .evaluate import evaluate
from .pretrained import CheckpointError

from .configs import config_dir

CONFIGS = config_dir()


def suite_results(cfg: DictConfig) -> Path:
    return Path(cfg.suite_results_dir) / cfg.suite.name


def suite_configs(cfg: DictConfig) -> list[tuple[str, str, DictConfig]]:
    """One composed eval config per (model, dataset) of the suite, with the suite's and the user's overrides."""
    suite, results = cfg.suite, suite_results(cfg)
    configs = []
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for model in suite.models:
            for dataset in suite.datasets:
                # a suite never downloads a dataset unless asked (download=true): a sweep that quietly
                # fetches tens of GB is a surprise; a missing dataset is listed and skipped instead
                overrides = [f"model={model}", f"dataset={dataset}", f"results_dir={results}",
                             f"dataset.download={str(bool(cfg.get('download', False))).lower()}",
                             *suite.get("overrides", []), *cfg.get("eval_overrides", [])]
                configs.append((model, dataset, compose("eval", overrides=overrides)))
    return configs


def run_suite(cfg: DictConfig) -> Path:
    """Evaluate every pair whose data (and checkpoint) can be had; the others are skipped with a note."""
    ran, skipped = [], []
    for model, dataset, eval_cfg in suite_configs(cfg):
        try:
            evaluate(eval_cfg)
            ran.append(f"{model} x {dataset}")
        except (DatasetError, CheckpointError) as e:
            first = str(e).splitlines()[0]
            skipped.append(f"{model} x {dataset}: {first}")
            print(f"suite {cfg.suite.name}: skipping {model} x {dataset}: {first}")
    print(f"suite {cfg.suite.name}: ran {len(ran)}, skipped {len(skipped)} (no data or no checkpoint)")
    results = suite_results(cfg)
    if not ran and not results.exists():
        raise DatasetError(f"Suite {cfg.suite.name!r}: nothing could run. " + " | ".join(skipped))
    return results
