"""`zeroshot report [results dirs...]`: the report of runs already made, or with `suite=NAME` the suite's runs first.

The suite composes and launches its multirun (zeroshot/suite.py); the report itself only reads run records
(zeroshot/report/build.py).
"""
from __future__ import annotations

from omegaconf import DictConfig

from zeroshot.report.build import build_report
from zeroshot.suite import run_suite


def report(cfg: DictConfig) -> dict:
    if "suite" in cfg and cfg.suite is not None:  # an optional group: absent unless suite=NAME was given
        results, not_run = run_suite(cfg)
        return build_report(cfg, [results], not_run)
    return build_report(cfg)
