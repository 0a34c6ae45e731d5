"""The report's multilingual view: per model, a language x task table (ImageNet top-1 in each language over the
classes that language names; mean_recall@1 on each multilingual retrieval set in each language), each task's
average over the languages it ran, and open_clip's published mean_recall@1 beside retrieval
(zeroshot/reference/published_multilingual_retrieval.csv, from tools/make_multilingual_reference.py), shown only
where the run used the benchmark's whole image set.

Runs are grouped by the language they recorded (`language`, ISO 639-1); an ImageNet run without one is English.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from zeroshot.paths import REFERENCE

PUBLISHED_MULTILINGUAL = REFERENCE / "published_multilingual_retrieval.csv"
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagenet_o")
# CLIP_benchmark's xtd10 and multilingual_mscoco_captions read the same images and caption files (XTD10's): open_clip
# publishes the latter, which applies to both
PUBLISHED_AS = {"xtd10": "multilingual_mscoco", "multilingual_mscoco": "multilingual_mscoco",
                "crossmodal3600": "crossmodal3600"}


def _cells(classification: pd.DataFrame | None, retrieval: pd.DataFrame | None) -> pd.DataFrame:
    """Long form: model, sha256, release, language, task, value (%), published (%), the latest run of each."""
    rows = []
    if classification is not None and not classification.empty and "language" in classification:
        c = classification[classification.dataset.isin(IMAGENET_FAMILY)].copy()
        multilingual_models = set(c[c.language.notna()].checkpoint_sha256)
        c = c[c.checkpoint_sha256.isin(multilingual_models)]  # English ImageNet rows of models run in other languages
        for r in c.sort_values("date").to_dict("records"):
            rows.append({"model": r["model"], "sha256": r["checkpoint_sha256"], "release": r.get("model_release"),
                         "language": r["language"] if isinstance(r["language"], str) else "en",
                         "task": f"{r['dataset']} top1", "value": 100 * float(r["top1"]), "published": np.nan})
    if retrieval is not None and not retrieval.empty and "language" in retrieval:
        pub = pd.read_csv(PUBLISHED_MULTILINGUAL)
        lookup = dict(zip(zip(pub.release, pub.dataset, pub.language), pub["mean_recall@1"]))
        for r in retrieval[retrieval.language.notna()].sort_values("date").to_dict("records"):
            key = (r.get("model_release"), PUBLISHED_AS.get(r["dataset"]), r.get("dataset_language") or r["language"])
            published = lookup.get(key, np.nan) if r.get("comparable") else np.nan
            rows.append({"model": r["model"], "sha256": r["checkpoint_sha256"], "release": r.get("model_release"),
                         "language": r["language"], "task": f"{r['dataset']} mean_recall@1",
                         "value": 100 * float(r["mean_recall@1"]), "published": published})
    cells = pd.DataFrame(rows)
    if cells.empty:
        return cells
    return cells.drop_duplicates(["sha256", "language", "task"], keep="last")


def multilingual_table(classification: pd.DataFrame | None, retrieval: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (model, language) and one `average` row per model; a column per task, and per retrieval task
    its published value (`<task> published`)."""
    cells = _cells(classification, retrieval)
    if cells.empty:
        return cells
    out = []
    for sha, group in cells.groupby("sha256", sort=False):
        wide = group.pivot(index="language", columns="task", values="value")
        pub = group.pivot(index="language", columns="task", values="published").dropna(axis=1, how="all")
        pub.columns = [f"{c} published" for c in pub.columns]
        table = wide.join(pub).sort_index()
        table.loc["average"] = table.mean(numeric_only=True)  # each column over the languages it has
        table.insert(0, "n_languages", [np.nan] * (len(table) - 1) + [int(wide.notna().any(axis=1).sum())])
        table = table.reset_index().rename(columns={"index": "language"})
        table.insert(0, "model", group.model.iloc[0])
        table.insert(1, "sha256", sha[:12])
        out.append(table)
    return pd.concat(out, ignore_index=True, sort=False)


def markdown(table: pd.DataFrame) -> list[str]:
    if table is None or table.empty:
        return []
    lines = ["## Multilingual", "",
             "Per model: ImageNet top-1 (%) in each language over the classes that language names (Babel-ImageNet's "
             "subset, or CLIP_benchmark's 1000), and mean_recall@1 (%) on each multilingual retrieval set in each "
             "language; `average` is each column's mean over the languages it ran (their count differs between "
             "columns where a language ran only some tasks). `published` is open_clip's measurement of the same "
             "release, shown where the run used the whole benchmark.", ""]
    for (model, sha), group in table.groupby(["model", "sha256"], sort=False):
        cols = [c for c in group.columns if c not in ("model", "sha256", "language", "n_languages")
                and group[c].notna().any()]
        lines += [f"### {model} (sha256 {sha})", "", "| language | " + " | ".join(cols) + " |",
                  "|" + "---|" * (len(cols) + 1)]
        for r in group.to_dict("records"):
            label = f"average ({int(r['n_languages'])} languages)" if r["language"] == "average" else r["language"]
            lines.append(f"| {label} | " + " | ".join("" if pd.isna(r[c]) else f"{r[c]:.2f}" for c in cols) + " |")
        lines.append("")
    return lines
