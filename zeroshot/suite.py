"""Suites: a named list of models x datasets (configs/suite/*.yaml), run as Hydra multiruns, then reported.

Every (model, dataset) pair is checked first: a dataset that is not on disk (and may not be downloaded) or a
model name that does not resolve is listed with the reason and skipped before anything is launched. The
runnable pairs become one Hydra multirun per task (classification, retrieval) over a generated `pair` config group (one file per pair, each
overriding /model and /dataset), so any Hydra launcher runs them unchanged: the basic one (in sequence),
`launcher=joblib` (local processes) or `launcher=submitit_slurm` (a cluster; `pip install "zeroshot[launchers]"`).
The report is built once the multirun returns, from the suite's results directory. A pair that fails while it
runs is recorded (not raised), so one broken dataset does not cost the other jobs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zeroshot.errors import ConfigError, DatasetError, UserError
from zeroshot.log import log
from zeroshot.paths import config_dir
from zeroshot.settings import CHOICES

CONFIGS = config_dir()


# `launcher` (its choices: settings.py) -> Hydra's launcher config; basic is Hydra's own, in sequence
LAUNCHERS = {name: None if name == "basic" else name for name in CHOICES["launcher"] if name is not None}


def suite_results(cfg: DictConfig) -> Path:
    return Path(cfg.suite_results_dir) / cfg.suite.name


@contextmanager
def _composer():
    """Hydra's compose API, inside a running Hydra app (report) or outside one (tests, the Python API)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield compose
    else:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            yield compose


def pair_overrides(cfg: DictConfig) -> list[str]:
    """What every job of the suite gets: where to write, whether to download, the suite's and the user's overrides."""
    # a suite never downloads a dataset unless asked (download=true): a sweep that quietly fetches tens of GB is
    # a surprise; a missing dataset is listed and skipped instead
    return [f"results_dir={suite_results(cfg)}", f"dataset.download={str(bool(cfg.download)).lower()}",
            *cfg.suite.overrides, *cfg.eval_overrides]


def split_entry(entry: str) -> tuple[str, str | None]:
    """A suite's dataset entry: `name`, or `name:language` (retrieval: dataset.language; classification:
    prompts.language)."""
    name, _, language = str(entry).partition(":")
    return name, language or None


def language_override(entry: str) -> list[str]:
    name, language = split_entry(entry)
    if language is None:
        return []
    return [f"{'dataset' if task_of(name) == 'retrieval' else 'prompts'}.language={language}"]


def expand_datasets(entries) -> list[str]:
    """`name:*` -> one entry per language the dataset config lists (`languages`), in its order."""
    import yaml

    out = []
    for entry in entries:
        name, language = split_entry(entry)
        if language != "*":
            out.append(str(entry))
            continue
        languages = (yaml.safe_load((CONFIGS / "dataset" / f"{name}.yaml").read_text()) or {}).get("languages")
        if not languages and task_of(name) == "classification":  # ImageNet: every language with names and templates
            from zeroshot.paths import REFERENCE

            facts = json.loads((REFERENCE / "multilingual.json").read_text(encoding="utf-8"))
            languages = sorted(set(facts["clip_benchmark"]["files"]) | set(facts["babel"]["template_languages"]))
        if not languages:
            raise ConfigError(f"suite entry {entry!r}: dataset {name!r} lists no languages (its config's `languages`)")
        out += [f"{name}:{lang}" for lang in languages]
    return out


def check_pairs(cfg: DictConfig) -> tuple[list[tuple[str, str]], list[dict]]:
    """(runnable pairs, skipped pairs with the reason), without loading any model or encoding anything."""
    from zeroshot.data.readers import build_dataset
    from zeroshot.models.sources import check_name

    runnable, skipped = [], []
    data_problem: dict[str, str | None] = {}
    model_problem: dict[str, str | None] = {}
    with _composer() as compose:
        for model in cfg.suite.models:
            for dataset in expand_datasets(cfg.suite.datasets):
                c = compose("eval", overrides=[f"model={model}", f"dataset={split_entry(dataset)[0]}",
                                               *pair_overrides(cfg), *language_override(dataset)])
                if model not in model_problem:
                    try:
                        check_name(c.model.get("checkpoint") or c.model.name)
                        model_problem[model] = None
                    except UserError as e:
                        model_problem[model] = f"model: {str(e).splitlines()[0]}"
                if dataset not in data_problem:
                    try:
                        if c.dataset.get("task") == "retrieval":  # images with captions: their own reader
                            from zeroshot.data.retrieval import build_retrieval_dataset

                            build_retrieval_dataset(c.dataset)
                        elif c.dataset.get("task") == "compositionality":
                            from zeroshot.data.compositionality import build_selection_dataset

                            build_selection_dataset(c.dataset)
                        else:
                            build_dataset(c.dataset)
                        data_problem[dataset] = None
                    except (UserError, OSError) as e:
                        data_problem[dataset] = f"data: {str(e).splitlines()[0]}"
                reason = model_problem[model] or data_problem[dataset]
                if reason:
                    skipped.append({"model": model, "dataset": dataset, "reason": reason})
                else:
                    runnable.append((model, dataset))
    return runnable, skipped


def write_pair_group(folder: Path, pairs: list[tuple[str, str]]) -> list[str]:
    """One config per pair in <folder>/pair/: Hydra sweeps this group like any other."""
    group = folder / "pair"
    group.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (model, dataset) in enumerate(pairs):
        name = f"p{i:04d}"
        dataset_name, language = split_entry(dataset)
        body = ""
        if language:  # a language entry: the key its task reads (language_override)
            key, value = language_override(dataset)[0].split("=", 1)
            body = f"{key.split('.')[0]}:\n  language: {json.dumps(value)}\n"
        (group / f"{name}.yaml").write_text(f"# @package _global_\n# {model} x {dataset}\ndefaults:\n"
                                             f"  - override /model: {model}\n  - override /dataset: {dataset_name}\n"
                                             f"  - _self_\n{body}")
        names.append(name)
    return names


# the Hydra task each kind of dataset's jobs run as (__main__.COMMANDS), and the config it composes
JOB_COMMANDS = {"classification": "suite-eval", "retrieval": "suite-retrieval", "compositionality": "suite-compositionality"}


def task_of(dataset: str) -> str:
    """A dataset config's task (configs/dataset/<name>.yaml `task`; classification where it says none)."""
    import yaml

    return (yaml.safe_load((CONFIGS / "dataset" / f"{dataset}.yaml").read_text()) or {}).get("task") or "classification"


def launch(cfg: DictConfig, pairs: list[tuple[str, str]]) -> int:
    """One multirun per task over its pairs, through the chosen Hydra launcher; returns the worst exit code."""
    launcher = cfg.get("launcher") or "basic"  # checked with every setting before the command began (settings.py)
    results = suite_results(cfg)
    pairs_dir = results / ".pairs" / time.strftime("%Y-%m-%d_%H-%M-%S")
    names = write_pair_group(pairs_dir, pairs)
    by_task: dict[tuple[str, str | None], list[str]] = {}
    for name, (_, dataset) in zip(names, pairs):
        dataset_name = split_entry(dataset)[0]
        task = task_of(dataset_name)
        # retrieval.yaml's own `override dataset: flickr30k` wins over a pair file's: its jobs get the dataset on
        # the command line, one multirun per dataset
        by_task.setdefault((task, dataset_name if task == "retrieval" else None), []).append(name)
    code = 0
    for (task, dataset_name), group in by_task.items():
        cmd = [sys.executable, "-m", "zeroshot", JOB_COMMANDS[task], "-m", f"+pair={','.join(group)}",
               f"hydra.searchpath=[file://{pairs_dir.resolve()}]", *pair_overrides(cfg)]
        if dataset_name:
            cmd.insert(5, f"dataset={dataset_name}")
        if LAUNCHERS[launcher]:
            cmd += [f"hydra/launcher={LAUNCHERS[launcher]}", *cfg.launcher_overrides]
        log.info("suite %s: launching %d %s jobs (%s launcher)", cfg.suite.name, len(group), task, launcher)
        code = max(code, subprocess.run(cmd).returncode)
    return code


def job(run, cfg: DictConfig) -> dict:
    """A suite's job: `run(cfg)`, whose failure is written down for the report instead of ending the multirun."""
    try:
        return run(cfg)
    except Exception as e:  # noqa: BLE001 - every failure of a job is a line of the report, whatever it is
        folder = Path(cfg.results_dir) / ".failures"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"model": cfg.model.name, "checkpoint": cfg.model.get("checkpoint"), "dataset": cfg.dataset.name,
                  "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        (folder / f"{time.time_ns()}.json").write_text(json.dumps(record))
        log.warning("suite job failed: %s x %s: %s", record["dataset"], record["model"], record["reason"])
        return {"failed": record}


def run_suite(cfg: DictConfig) -> tuple[Path, list[dict]]:
    """Check every pair, launch the runnable ones, and return (results directory, pairs not run with why)."""
    runnable, skipped = check_pairs(cfg)
    # tasks a suite lists for completeness that zeroshot cannot run (datacomp_38: WinoGAViL), with the reason
    skipped += [{"model": m, "dataset": task, "reason": f"not implemented: {why}"}
                for task, why in (cfg.suite.get("not_implemented") or {}).items() for m in cfg.suite.models]
    for s in skipped:
        log.info("suite %s: skipping %s x %s: %s", cfg.suite.name, s["model"], s["dataset"], s["reason"])
    results = suite_results(cfg)
    if not runnable:
        raise DatasetError(f"Suite {cfg.suite.name!r}: nothing can run. " + " | ".join(
            f"{s['model']} x {s['dataset']}: {s['reason']}" for s in skipped[:5]))
    failures_before = set((results / ".failures").glob("*.json")) if (results / ".failures").is_dir() else set()
    code = launch(cfg, runnable)
    failed = [json.loads(p.read_text()) for p in sorted((results / ".failures").glob("*.json")) if p not in failures_before] \
        if (results / ".failures").is_dir() else []
    for f in failed:
        skipped.append({"model": f["model"], "dataset": f["dataset"], "reason": f"failed while running: {f['reason']}"})
    if code != 0 and not failed:
        skipped.append({"model": "*", "dataset": "*", "reason": f"the multirun exited with code {code}"})
    print(f"suite {cfg.suite.name}: ran {len(runnable) - len(failed)} pairs; {len(skipped)} not run (listed in the report)")
    (results / "suite_status.json").write_text(json.dumps({"suite": OmegaConf.to_container(cfg.suite, resolve=True),
                                                           "ran": [list(p) for p in runnable], "not_run": skipped}, indent=1))
    return results, skipped
