"""The report's compositionality table: per model, each image-caption selection set's scores (SugarCrepe's
replace/swap/add means and subsets, Winoground's text/image/group, ARO's macro accuracies and order accuracy).

Rows follow classification's rules: one set of weights (sha256) on one set of images and instances (fingerprint,
split, instances hash); the latest of repeats is shown. Published numbers come from
zeroshot/reference/published_compositionality.csv (tools/make_compositionality_reference.py, which cites each
number's source), shown only for a known release run on the benchmark's full set; otherwise the cell says why.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.paths import REFERENCE
from zeroshot.report.published import add_delta, published_for
from zeroshot.report.runs import latest_per_row, run_records
from zeroshot.report.tables import fmt

PUBLISHED_COMPOSITIONALITY = REFERENCE / "published_compositionality.csv"
SCORES = ["text_accuracy", "image_accuracy", "group_accuracy", "macro_accuracy", "text_accuracy_mean_of_subsets"]


def load_compositionality_runs(inputs) -> pd.DataFrame:
    """One record per complete compositionality run (metrics.json with kind "compositionality") under the inputs."""
    records = []
    for m in run_records(inputs, "compositionality"):
        if "main_metric" not in m or "model" not in m:
            warnings.warn(f"skipping {m.path}: not a complete compositionality metrics.json")
            continue
        records.append({
            "model": m["model"], "model_release": m.get("model_release"), "dataset": m["dataset"],
            "dataset_label": m.get("dataset_label"), "dataset_fingerprint": m.get("dataset_fingerprint"),
            "split": m.get("split"), "prompts_hash": m.get("instances_hash", ""), "metric": m["metric"],
            "main_metric": m["main_metric"], **{k: m.get(k) for k in SCORES},
            **{f"mean_{k}": v for k, v in (m.get("group_means") or {}).items()},
            "n_instances": m.get("n_instances"), "ties": m.get("ties"), "comparable": bool(m.get("comparable")),
            "not_comparable_reason": m.get("not_comparable_reason"),
            "checkpoint_sha256": m.get("checkpoint_sha256"), "date": m.get("timestamp"),
            "run_dir": str(m.run_dir),
        })
    return pd.DataFrame(records)


def compositionality_table(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The latest run per row key, with the published value of its main metric (where one is known) and the delta."""
    if runs.empty:
        return runs
    latest = latest_per_row(runs)
    pub = pd.read_csv(PUBLISHED_COMPOSITIONALITY)
    lookup = {(r.release, r.dataset, r.metric): (r.value, r.source) for r in pub.itertuples()}
    rows = [published_for(r.model_release, lookup.get((r.model_release, r.dataset, r.metric))
                          if isinstance(r.model_release, str) else None, r.comparable, r.not_comparable_reason,
                          missing="no published number") for r in latest.itertuples()]
    add_delta(latest, rows, 100 * latest["main_metric"].astype(float), threshold)
    return latest.sort_values(["model", "dataset_label"])


def markdown(table: pd.DataFrame) -> list[str]:
    if table is None or table.empty:
        return []
    lines = ["## Compositionality (image-caption selection)", "",
             "Accuracy in %. text: every image's right caption scores above its wrong ones; image: every right caption "
             "scores its own image above the instance's others (Winoground); group: both. SugarCrepe's replace/swap/add "
             "are the unweighted means of their subsets' text accuracy; ARO's VG sets report the macro accuracy over "
             "relations or attribute pairs. `ties` is how a tie between a right and a wrong candidate counted "
             "(docs/compositionality.md).", "",
             "| model | dataset | main metric | value | text | image | group | replace | swap | add | published | delta | | "
             "instances | ties | sha256 | date |", "|" + "---|" * 17]
    for r in table.to_dict("records"):
        pub = f"{r['published']:.2f} ({r['published_note']})" if not pd.isna(r["published"]) else r["published_note"]
        cells = [r["model"], r["dataset_label"], r["metric"], fmt(r["main_metric"], pct=True), fmt(r.get("text_accuracy"), pct=True),
                 fmt(r.get("image_accuracy"), pct=True), fmt(r.get("group_accuracy"), pct=True), fmt(r.get("mean_replace"), pct=True),
                 fmt(r.get("mean_swap"), pct=True), fmt(r.get("mean_add"), pct=True), pub,
                 "" if pd.isna(r["delta"]) else f"{r['delta']:+.2f}", r["flag"], str(r["n_instances"]), str(r["ties"]),
                 str(r["checkpoint_sha256"])[:12], str(r["date"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines + [""]


# ------------------------------------------------------------------------ paired comparison (compare, report)

IMAGES = ["dataset_fingerprint", "split", "prompts_hash"]  # the same images and the same instances


def instance_outcome(run_dir: str, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(instance keys, 0/1 outcome, outcome name) of a run: Winoground's group outcome where the run's metric is
    group_score, else the text outcome (SugarCrepe's and ARO's accuracies are means of it, per subset or group)."""
    z = np.load(Path(run_dir) / "outcomes.npz", allow_pickle=False)
    name = "group" if metric in ("group_score", "group_accuracy") else "text"
    return z["keys"].astype(str), z[name].astype(np.float64), name


def paired_rows(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Every two sets of weights run on the same instances: paired per instance (by key), the difference in the
    share right with a paired bootstrap CI, the 2x2 counts and McNemar's exact test on the discordant instances."""
    import itertools

    from zeroshot.metrics import paired as cmp
    from zeroshot.metrics import stats

    rows, notes = [], []
    if table is None or table.empty:
        return rows, notes
    for _, g in table.groupby(IMAGES, sort=False):
        g = g.drop_duplicates("checkpoint_sha256", keep="last")
        for a, b in itertools.combinations(g.to_dict("records"), 2):
            try:
                ka, va, name = instance_outcome(a["run_dir"], a["metric"])
                kb, vb, _ = instance_outcome(b["run_dir"], b["metric"])
            except (OSError, KeyError, ValueError) as e:
                notes.append(f"{a['dataset_label']}: {a['model']} vs {b['model']} not compared: {e}")
                continue
            where = {k: i for i, k in enumerate(kb)}
            if set(ka) != set(where) or len(where) != len(kb):
                notes.append(f"{a['dataset_label']}: {a['model']} vs {b['model']} not compared: the runs scored "
                             f"different instances ({len(set(ka) ^ set(where))} differ; skip_bad_images?)")
                continue
            vb = vb[[where[k] for k in ka]]
            ra, rb = va > 0.5, vb > 0.5
            d = va - vb
            boot = stats.bootstrap_means([d], n_boot, cmp.dataset_seed(seed, a["dataset_fingerprint"]))[0]
            low, high = stats.percentile_ci(boot)
            only_a, only_b = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
            rows.append({"dataset": a["dataset_label"], "outcome": name, "model_a": a["model"], "model_b": b["model"],
                         "a": float(va.mean()), "b": float(vb.mean()), "diff": float(d.mean()), "ci_low": low,
                         "ci_high": high, "both_right": int(np.sum(ra & rb)), "only_a": only_a, "only_b": only_b,
                         "both_wrong": int(np.sum(~ra & ~rb)), "mcnemar_p": cmp.mcnemar_exact(only_a, only_b),
                         "n_instances": len(d), "n_boot": n_boot, "seed": seed, "run_a": a["run_dir"], "run_b": b["run_dir"]})
    return rows, notes


def paired_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Compositionality: paired per instance", "",
             "Two sets of weights on the same instances, paired by instance: the share right (text outcome; Winoground's "
             "group outcome), the difference A - B with a paired bootstrap 95% CI, and McNemar's exact test on the "
             "instances only one of them got right.", "",
             "| dataset | outcome | A | B | A % | B % | A - B | 95% CI | only A | only B | McNemar p | instances |",
             "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['outcome']} | {r['model_a']} | {r['model_b']} | {100 * r['a']:.2f} | "
                     f"{100 * r['b']:.2f} | {100 * r['diff']:+.2f} | [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] | "
                     f"{r['only_a']} | {r['only_b']} | {r['mcnemar_p']:.3g} | {r['n_instances']} |")
    return lines + [""]


def report_lines(table: pd.DataFrame, cfg) -> list[str]:
    """The report's sections: the table, then the paired comparison of runs on the same instances."""
    rows, notes = paired_rows(table, int(cfg.compare.n_boot), int(cfg.compare.seed)) if not table.empty else ([], [])
    return markdown(table) + paired_markdown(rows) + [f"- {n}" for n in notes]
