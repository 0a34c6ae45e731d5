"""Paired comparisons for `compare` and `report`: runs paired by image identity, each pair's statistics
(metrics/paired.py), suite-level wins/ties/losses, ranks, and the calibration table.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.errors import ReportError
from zeroshot.metrics import paired as cmp
from zeroshot.runs import RunRecord

IMAGES = ["dataset_fingerprint", "split"]


SYSTEM = ["checkpoint_sha256", "prompts_hash"]


def read_npz(path: Path, needed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A run's .npz, every array read now: a truncated or garbled file is a ReportError naming it, not a
    BadZipFile (or zlib.error, EOFError) traceback from deep inside numpy."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise ReportError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated'}); "
                          "re-run that evaluation to write it again, or leave the run out") from None
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise ReportError(f"{path} lacks {', '.join(missing)}; re-run that evaluation to write it again")
    return arrays


def load_run(run_dir: str | Path, name: str) -> cmp.RunImages:
    """A run directory's per-image record: logits.npz, the paths in predictions.csv, class names, group spec."""
    run_dir = Path(run_dir)
    if not (run_dir / "logits.npz").exists():
        raise ReportError(f"{run_dir} has no logits.npz, which a paired comparison needs: re-run that evaluation "
                          "(`zeroshot eval ...`) to write one")
    m = RunRecord.from_json(run_dir / "metrics.json")
    z = read_npz(run_dir / "logits.npz", ("logits", "labels", "indices"))
    keys = np.array([f"#{i}" for i in z["indices"]], dtype=object)
    if (run_dir / "predictions.csv").exists():
        preds = pd.read_csv(run_dir / "predictions.csv", usecols=["index", "path"], keep_default_na=False)
        if len(preds) == len(keys) and (preds["index"].to_numpy() == z["indices"]).all():
            # a path (or webdataset shard:key) is the identity; sources without paths keep their dataset index
            keys = np.array([p if p else k for p, k in zip(preds["path"].astype(str), keys)], dtype=object)
    classnames = []
    if (run_dir / "per_class.csv").exists():
        classnames = pd.read_csv(run_dir / "per_class.csv", keep_default_na=False)["class"].astype(str).tolist()
    groups = {}
    if (run_dir / "config.yaml").exists():
        import yaml

        groups = ((yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("dataset") or {}).get("groups") or {}
    return cmp.RunImages(name, str(run_dir), m.get("dataset_fingerprint") or "", m.get("split"), keys,
                         z["labels"].astype(np.int64), z["logits"].astype(np.float32), m.get("metric"),
                         classnames, z["metadata"] if "metadata" in z else None,
                         z["multilabel"] if "multilabel" in z else None, groups)


def with_systems(table: pd.DataFrame) -> pd.DataFrame:
    """Each row's system: the weights and the prompt set by name, so that one system spans a suite whose datasets
    each have their own class names (and so prompts hash). Where one name covers two prompt variants on the same
    images (e.g. templates given on the command line), the hash tells them apart. The label is the model's name,
    plus the prompts, the hash or the sha256 only where needed to be unique."""
    table = table.copy()
    table["system_key"] = list(zip(table.checkpoint_sha256, table.prompts))
    variants = table.groupby([*IMAGES, "system_key"]).prompts_hash.transform("nunique")
    table.loc[variants > 1, "system_key"] = [(*k, h) for k, h in zip(table.system_key[variants > 1],
                                                                      table.prompts_hash[variants > 1])]
    systems = table.drop_duplicates("system_key")
    labels = {}
    for r in systems.itertuples():
        label, others = str(r.model), systems[systems.model == r.model]
        if len(others) > 1:
            label += f" [{r.prompts}]"
            if len(r.system_key) == 3:
                label += f"#{str(r.prompts_hash)[:8]}"
            if sum(k[1:] == r.system_key[1:] for k in others.system_key) > 1:
                label += f" sha256 {str(r.checkpoint_sha256)[:8]}"
        labels[r.system_key] = label
    table["system"] = table.system_key.map(labels)
    return table


@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)  # per pair x dataset x metric
    suite: list[dict] = field(default_factory=list)  # per pair
    changes: list[dict] = field(default_factory=list)  # per pair x dataset
    ranks: pd.DataFrame | None = None  # system x dataset: main metric (%) and rank
    wtl: pd.DataFrame | None = None  # system x system: "w/t/l" of the row against the column
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def shared_groups(table: pd.DataFrame) -> list[pd.DataFrame]:
    """Rows grouped by images, keeping groups where two or more systems ran (they differ in weights or prompts)."""
    evals = table[table.run_dir.notna()] if "run_dir" in table else table.iloc[0:0]
    if "kind" in evals:
        evals = evals[evals.kind == "eval"]
    return [g for _, g in evals.groupby(IMAGES, sort=False) if g.drop_duplicates(SYSTEM).shape[0] >= 2]


def dataset_names(groups: list[pd.DataFrame]) -> list[str]:
    """A column name per image set: the dataset label, with the split or fingerprint where two share one."""
    labels = [str(g.dataset_label.iloc[0]) for g in groups]
    out = []
    for g, label in zip(groups, labels):
        if labels.count(label) > 1:
            label = f"{label} ({g.split.iloc[0]}, {str(g.dataset_fingerprint.iloc[0])[:8]})"
        out.append(label)
    return out


def build_comparison(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, top_k: int = 5) -> Comparison:
    comp = Comparison(settings={"n_boot": n_boot, "seed": seed, "alpha": alpha, "level": cmp.LEVEL, "top_k": top_k})
    groups = shared_groups(table)
    if not groups:
        return comp
    names = dataset_names(groups)
    table = with_systems(pd.concat(groups))
    # A and B in the order the runs were given (load_runs keeps the inputs' order): `compare a b` says A - B = a - b
    order = {s: table.index[table.system == s].min() for s in set(table.system)}
    groups = [g for _, g in table.groupby(IMAGES, sort=False)]
    main = {}
    for dataset, g in zip(names, groups):  # one image set at a time: its runs' logits are loaded together, then freed
        runs = {}
        for _, r in g.drop_duplicates("system", keep="last").iterrows():
            try:
                runs[r.system] = load_run(r.run_dir, r.system)
            except (ReportError, OSError, KeyError, ValueError) as e:
                comp.notes.append(f"{dataset}: {r.model} left out of the comparison: {e}")
        for name, run in runs.items():
            main.setdefault(name, {})[dataset] = RunRecord.from_json(Path(run.run_dir) / "metrics.json").get("main_metric")
        for a, b in itertools.combinations(sorted(runs, key=order.get), 2):
            try:
                rows = cmp.compare_pair(runs[a], runs[b], n_boot, seed)
                change = cmp.what_changed(runs[a], runs[b], top_k)
            except ReportError as e:
                comp.notes.append(f"{dataset}: {a} vs {b} not compared: {e}")
                continue
            for r in rows:
                r.update(system_a=a, system_b=b, dataset=dataset, split=runs[a].split, dataset_fingerprint=runs[a].fingerprint,
                         run_a=runs[a].run_dir, run_b=runs[b].run_dir)
            comp.rows += rows
            comp.changes.append({"system_a": a, "system_b": b, "dataset": dataset, **change})
    if not comp.rows:
        return comp
    systems = sorted(main, key=order.get)
    for a, b in itertools.combinations(systems, 2):
        tested = [r for r in comp.rows if (r["system_a"], r["system_b"]) == (a, b) and "mcnemar_p" in r]
        if tested:
            comp.suite.append({"system_a": a, "system_b": b, "metric": "/".join(sorted({r["metric"] for r in tested})),
                               **cmp.suite_summary(tested, alpha)})
    comp.ranks = rank_table(main, names)
    comp.wtl = wtl_matrix(comp.suite, systems)
    return comp


def rank_table(main: dict[str, dict[str, float]], datasets: list[str]) -> pd.DataFrame:
    """Per system: each dataset's main metric (%) with its rank there (1 = best), and the mean rank."""
    rank = {d: cmp.ranks({s: v.get(d, np.nan) for s, v in main.items()}) for d in datasets}
    rows = []
    for s in sorted(main):
        row = {"system": s}
        for d in datasets:
            v = main[s].get(d)
            row[d] = "" if v is None else f"{100 * v:.2f} ({rank[d][s]:g})"
        mine = [rank[d][s] for d in datasets if s in rank[d]]
        row["mean rank"] = float(np.mean(mine)) if mine else np.nan
        row["datasets"] = len(mine)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["mean rank", "system"]).reset_index(drop=True)


def wtl_matrix(suite: list[dict], systems: list[str]) -> pd.DataFrame:
    """Row against column: wins/ties/losses over the datasets both ran (Holm-adjusted McNemar, alpha)."""
    grid = pd.DataFrame("", index=systems, columns=systems)
    for s in suite:
        grid.loc[s["system_a"], s["system_b"]] = f"{s['wins']}/{s['ties']}/{s['losses']}"
        grid.loc[s["system_b"], s["system_a"]] = f"{s['losses']}/{s['ties']}/{s['wins']}"
    for s in systems:
        grid.loc[s, s] = "-"
    return grid


def report_section(table: pd.DataFrame, cfg, out: Path) -> tuple[list[str], str, list[Path]]:
    """For `report`: markdown lines, HTML and figures of the comparison (rows sharing images) and of calibration."""
    from zeroshot.report.compare_render import (
        calibration_html,
        calibration_markdown,
        calibration_rows,
        difference_figures,
        html_section,
        markdown_lines,
    )

    c = cfg.get("compare") or {}
    comp = build_comparison(table, int(c.n_boot), int(c.seed), float(c.alpha),
                            int(c.top_k))
    figures = difference_figures(comp, out)
    calib = calibration_rows(table)
    from zeroshot.report.compare_gallery import write_compare_gallery
    from zeroshot.report.tables import folded

    gallery = write_compare_gallery(comp, out, load_run)
    link = (f"<p><a href='{gallery.name}'>The images one system got right and the other wrong</a></p>" if gallery else "")
    page = folded("Paired comparisons", link + html_section(comp)) + folded("Calibration", calibration_html(calib))
    return markdown_lines(comp, figures) + calibration_markdown(calib), page, figures
