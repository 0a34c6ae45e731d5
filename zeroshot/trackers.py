"""Runs logged to the experiment tracker a lab already uses: `logger=mlflow|tensorboard|wandb|csv`, the `logger`
config group of lightning-hydra-template (default null: none). The commands call `check` before any work (a tracker
whose package is missing is an error naming its extra) and `log_run` once a run is complete: it reads the run's
metrics.json, the run record, so a tracker shows exactly what results/ holds. The identity (weights, sha256, dataset
fingerprint, split, prompts hash) becomes parameters, every number a metric, the figures and metrics.json files.
A tracker that fails (no server, no credentials, a full disk) is one warning: results/ is already written.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zeroshot.errors import ConfigError
from zeroshot.files import atomic_write
from zeroshot.log import log
from zeroshot.runs import RunRecord

# logger name -> (the module it imports, the extra that installs it); csv needs nothing
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
# what identifies a run: logged as parameters (and tags), never as metrics
IDENTITY = ("kind", "model", "model_release", "architecture", "backend", "checkpoint_sha256", "dataset", "dataset_label",
            "dataset_fingerprint", "dataset_fingerprint_kind", "split", "prompts", "prompts_hash", "prompts_label",
            "precision", "device", "comparable", "timestamp")
FILES = ("config.yaml", "per_class.csv", "*.png")  # what each tracker keeps of the run directory, beside its record
NOT_METRICS = ("preprocess", "versions", "benchmark", "class_prompts")  # records' dicts of settings, not results


@dataclass
class RunLog:
    """What a tracker records of one complete run."""

    name: str  # the run directory's path under results_dir: dataset/model/prompts/timestamp
    run_dir: Path
    params: dict[str, str]
    metrics: dict[str, float]
    files: list[Path]


def loggers(cfg) -> dict:
    """The configured trackers: {name: settings}; empty with logger=null."""
    chosen = cfg.get("logger")
    return {str(k): v for k, v in chosen.items()} if chosen else {}


def check(cfg) -> None:
    """Before any work: every configured tracker is known and its package installed."""
    for name in loggers(cfg):
        if name == "csv":
            continue
        if name not in PACKAGES:
            raise ConfigError(f"logger {name!r} is not one zeroshot logs to: logger=mlflow, tensorboard, wandb or csv")
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} needs the {module} package: pip install \"zeroshot[{extra}]\" "
                              "(or drop logger=... to keep results in results/ only)")


def numbers(record: dict) -> dict[str, float]:
    """A record's numbers: top-level ones, and those one dict down as "dict/key" (calibration/ece, ensemble/top1)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    out = {k: float(v) for k, v in record.items() if number(v) and k not in IDENTITY}
    for k, v in record.items():
        if isinstance(v, dict) and k not in NOT_METRICS:
            out.update({f"{k}/{sub}": float(x) for sub, x in v.items() if number(x)})
    return out


def read_run(cfg, run_dir: Path, record_file: str = "metrics.json") -> RunLog:
    """The run record (metrics.json; a prompt experiment's summary.json) as parameters and metrics, and the files."""
    record = RunRecord.from_json(run_dir / record_file).to_json()  # as written: an eval's holds no kind
    params = {k: str(record[k]) for k in IDENTITY if record.get(k) is not None}
    metrics = numbers(record)
    try:
        name = run_dir.resolve().relative_to(Path(cfg.results_dir).resolve()).as_posix()
    except ValueError:
        name = run_dir.name
    files = sorted({p for pattern in (record_file, *FILES) for p in run_dir.glob(pattern) if p.is_file()})
    return RunLog(name, run_dir, params, metrics, files)


def log_run(cfg, run_dir: str | Path, record_file: str = "metrics.json") -> None:
    """Log a complete run to each configured tracker; a tracker that fails is a warning, never the run's failure."""
    chosen = loggers(cfg)
    if not chosen:
        return
    run = read_run(cfg, Path(run_dir), record_file)
    for name, settings in chosen.items():
        try:
            where = TRACKERS[name](run, settings)
            log.info("logger=%s: logged %s to %s", name, run.name, where)
        except Exception as e:  # noqa: BLE001 - a tracker's failure must not lose or fail a finished run
            first = (str(e).strip().splitlines() or [""])[0][:300]
            log.warning("logger=%s: the run was not logged (%s: %s); its results are in %s", name, type(e).__name__,
                        first, run.run_dir)


# ---------------------------------------------------------------- the trackers


def _local_uri(location: str) -> str:
    """A tracking URI: a plain path becomes an SQLite store in that file (made absolute; its folder created)."""
    if re.match(r"^[A-Za-z][\w+.-]*:", location) and not re.match(r"^[A-Za-z]:[\\/]", location):
        return location  # http://, https://, sqlite:///, databricks, file: ...
    path = Path(location).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def to_mlflow(run: RunLog, settings) -> str:
    """An MLflow run in `experiment_name`: parameters and tags, metrics, and the run's files as artifacts."""
    import mlflow
    from mlflow.entities import Metric, Param

    # a server that is down: a few retries (MLflow's default backs off for minutes), unless the user set them
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    uri = _local_uri(str(settings.tracking_uri))
    client = mlflow.MlflowClient(uri)
    experiment_id = mlflow_experiment(client, settings, uri)
    tags = {f"zeroshot.{k}": v for k, v in run.params.items()} | {"zeroshot.run_dir": str(run.run_dir.resolve())}
    tags |= {str(k): str(v) for k, v in (settings.tags or {}).items()}
    created = client.create_run(experiment_id, run_name=settings.run_name or run.name, tags=tags)
    run_id = created.info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in run.params.items()],
                         metrics=[Metric(mlflow_name(k), v, 0, 0) for k, v in run.metrics.items()])
        for path in run.files:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return f"{uri} (experiment {settings.experiment_name!r}, run {run_id})"


def mlflow_experiment(client, settings, uri: str) -> str:
    """The experiment's id, made on first use; a local store keeps its files beside it, a server where it is set to."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    local = uri.startswith("sqlite:") and settings.artifact_location
    artifacts = Path(str(settings.artifact_location)).expanduser().resolve().as_uri() if local else None
    try:
        return client.create_experiment(settings.experiment_name, artifact_location=artifacts)
    except MlflowException:  # a parallel job of the same multirun made it first
        experiment = client.get_experiment_by_name(settings.experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


def mlflow_name(key: str) -> str:
    """MLflow's metric names allow letters, digits and _-. :/ only: recall@5 is logged as recall_at_5."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


def to_tensorboard(run: RunLog, settings) -> str:
    """Event files under save_dir/<run>: scalars, the identity as text and hparams, the figures as images."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    folder = Path(str(settings.save_dir)).expanduser().resolve() / run.name
    with SummaryWriter(log_dir=str(folder)) as writer:
        for key, value in run.metrics.items():
            writer.add_scalar(key, value, 0)
        writer.add_text("identity", "\n".join(f"- **{k}**: `{v}`" for k, v in run.params.items()), 0)
        for summary in hparams(run.params, {k: v for k, v in run.metrics.items() if k in ("top1", "main_metric")}):
            writer.file_writer.add_summary(summary)
        for path in run.files:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    writer.add_image(path.stem, np.asarray(image.convert("RGB")), 0, dataformats="HWC")
            elif path.suffix == ".json":  # the record
                writer.add_text(path.name, "```\n" + path.read_text() + "\n```", 0)
    return str(folder)


def to_wandb(run: RunLog, settings) -> str:
    """A W&B run in `project` (WANDB_MODE=offline keeps it on disk for `wandb sync`): config, summary, files."""
    import wandb

    try:
        online = (settings.mode or os.environ.get("WANDB_MODE") or "online") in ("online", "run")
        if online and not wandb.login(prompt=False, verify=False):  # never an interactive prompt at the end of a run
            raise RuntimeError("no W&B credentials: set WANDB_API_KEY or run `wandb login`; WANDB_MODE=offline keeps "
                               "runs on disk for `wandb sync`")
        save_dir = Path(str(settings.save_dir)).expanduser().resolve()
        save_dir.mkdir(parents=True, exist_ok=True)
        with wandb.init(project=settings.project, entity=settings.entity, group=settings.group, mode=settings.mode,
                        dir=str(save_dir), name=run.name, config=run.params, tags=list(settings.tags or []),
                        reinit="create_new", settings=wandb.Settings(console="off")) as wrun:
            wrun.log({**run.metrics, **{p.stem: wandb.Image(str(p)) for p in run.files if p.suffix == ".png"}})
            wrun.summary.update(run.metrics)
            for path in run.files:
                wrun.save(str(path), base_path=str(run.run_dir), policy="now")
            return f"{Path(wrun.dir).parent} ({wrun.settings.mode})"
    finally:
        # waits for W&B's service process to write the run out (finish alone may return before it has), and
        # forgets the settings it read from the environment, so the next run of a multirun reads them afresh
        wandb.teardown()


def to_csv(run: RunLog, settings) -> str:
    """Lightning's CSVLogger layout under save_dir/<run>: metrics.csv (one row) and hparams.yaml."""
    import csv
    import io

    import yaml

    folder = Path(str(settings.save_dir)).expanduser().resolve() / run.name
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["step", *run.metrics])
    writer.writeheader()
    writer.writerow({"step": 0, **run.metrics})
    with atomic_write(folder / "metrics.csv", "w") as f:
        f.write(out.getvalue())
    with atomic_write(folder / "hparams.yaml", "w") as f:
        yaml.safe_dump(run.params, f, sort_keys=False)
    return str(folder)


TRACKERS = {"mlflow": to_mlflow, "tensorboard": to_tensorboard, "wandb": to_wandb, "csv": to_csv}
