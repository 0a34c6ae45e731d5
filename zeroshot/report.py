"""Benchmark reports: `python -m zeroshot report [results dirs...]`.

Collects every run's metrics.json into one table (model x dataset x prompts), puts the published numbers
beside it (with the metric each source used), flags large gaps and irreproducible repeats, and writes
report.md, report.csv, report.html (figures inlined) and the figures. With `suite=NAME` it first runs the
suite's evaluations whose data is present.
"""
from __future__ import annotations

import base64
import html
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from .results import make_run_dir, pyplot

PUBLISHED = Path(__file__).with_name("reference") / "published.csv"
REQUIRED = ("top1", "top5", "mean_per_class_recall", "model", "dataset", "prompts")
METRIC_COLUMNS = ["top1", "top5", "mean_per_class_recall"]


class ReportError(RuntimeError):
    pass


def load_runs(inputs: list[str | Path]) -> pd.DataFrame:
    """One row per complete run (eval) or probe; a malformed metrics.json is skipped with a warning."""
    records = []
    for root in map(Path, inputs):
        if not root.exists():
            raise ReportError(f"Results directory {root} does not exist. Pass directories that hold runs (default: results/)")
        for path in sorted(root.rglob("metrics.json")):
            try:
                m = json.loads(path.read_text())
                kind = m.get("kind", "eval")
                needed = ("top1", "model", "dataset") if kind == "linear_probe" else REQUIRED
                missing = [k for k in needed if k not in m]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                float(m["top1"])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                warnings.warn(f"skipping {path}: not a complete metrics.json ({e})")
                continue
            versions = m.get("versions") or {}
            records.append({
                "kind": kind, "model": m["model"], "dataset": m["dataset"], "prompts": m.get("prompts", ""),
                **{k: m.get(k) for k in METRIC_COLUMNS}, "n_images": m.get("n_images"),
                "checkpoint_sha256": (m.get("checkpoint_sha256") or "")[:12], "precision": m.get("precision"),
                "device": m.get("device"), "date": m.get("timestamp") or path.parent.name,
                "version": versions.get("zeroshot"), "git_commit": (versions.get("git_commit") or "")[:10],
                "run_dir": str(path.parent),
            })
    if not records:
        raise ReportError(f"No runs found under {', '.join(map(str, inputs))} (no complete metrics.json). "
                          "Run `python -m zeroshot eval ...` first, or point the report at the directories that hold runs.")
    return pd.DataFrame(records)


def reproducibility(runs: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, list[str]]:
    """Keep the latest of repeated runs; note every repeat whose top-1 disagrees beyond `tolerance`."""
    notes = []
    keys = ["model", "dataset", "prompts"]
    evals = runs[runs.kind == "eval"].sort_values("date")
    for key, group in evals.groupby(keys):
        if len(group) > 1 and group.top1.max() - group.top1.min() > tolerance:
            notes.append(f"{' / '.join(key)}: {len(group)} runs disagree: top-1 from {100 * group.top1.min():.2f}% to "
                         f"{100 * group.top1.max():.2f}% (checkpoints {', '.join(sorted(set(group.checkpoint_sha256)))}; "
                         f"{', '.join(group.run_dir)})")
    latest = evals.groupby(keys, as_index=False).tail(1).copy()
    latest["n_runs"] = latest.set_index(keys).index.map(evals.groupby(keys).size()).to_numpy()
    return latest, notes


def add_published(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """published / delta in points, each compared in the metric its source used (mean per-class recall for
    Pets, Flowers102, Caltech101 and FGVC Aircraft; top-1 elsewhere). The CLIP paper is preferred to open_clip."""
    ref = pd.read_csv(PUBLISHED)
    rank = {"clip_paper": 0, "open_clip": 1}
    ref = ref.sort_values("source", key=lambda s: s.map(rank)).drop_duplicates(["model", "dataset"])
    table = table.merge(ref.rename(columns={"source": "published_source", "metric": "published_metric",
                                            "value": "published"}), on=["model", "dataset"], how="left")
    ours = [100 * r[r["published_metric"]] if isinstance(r["published_metric"], str) else np.nan for _, r in table.iterrows()]
    table["delta"] = np.array(ours) - table["published"]
    table["flag"] = np.where(table["delta"].abs() > threshold, "!", "")
    return table


def add_linear_probe(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    probes = runs[runs.kind == "linear_probe"].sort_values("date").groupby(["model", "dataset"], as_index=False).tail(1)
    probes = probes[["model", "dataset", "top1"]].rename(columns={"top1": "linear_probe"})
    table = table.merge(probes, on=["model", "dataset"], how="outer")
    table["prompts"] = table["prompts"].fillna("")
    return table


def fmt(x, pct=True) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return f"{100 * x:.2f}" if pct else f"{x:+.2f}"


HEADERS = ["model", "prompts", "top-1", "top-5", "mean per-class recall", "linear probe", "published", "delta",
           "checkpoint", "version", "precision", "device", "date", "runs"]
TOP1, DELTA = HEADERS.index("top-1"), HEADERS.index("delta")


def formatted_rows(table: pd.DataFrame):
    """Per dataset, best top-1 first: each row's cells as text in HEADERS order, whether it is the dataset's
    best top-1, and whether its delta is flagged. Shared by the markdown and the HTML report."""
    for dataset, group in table.groupby("dataset", sort=True):
        best = group.top1.max()
        rows = []
        for r in group.sort_values("top1", ascending=False).itertuples():
            cells = [
                str(r.model), str(r.prompts), fmt(r.top1), fmt(r.top5), fmt(r.mean_per_class_recall), fmt(r.linear_probe),
                "" if pd.isna(r.published) else f"{r.published:.2f} ({r.published_source})", fmt(r.delta, pct=False),
                str(r.checkpoint_sha256 or ""), f"{r.version or ''} {r.git_commit or ''}".strip(), str(r.precision or ""),
                str(r.device or ""), str(r.date or ""), "" if pd.isna(r.n_runs) else str(int(r.n_runs)),
            ]
            rows.append((cells, r.top1 == best and not np.isnan(best), bool(r.flag)))
        yield dataset, rows


def markdown(table: pd.DataFrame, notes: list[str], threshold: float) -> str:
    lines = ["# zeroshot benchmark report", "",
             f"Accuracies in %. `published` is the CLIP paper's number where it gives one, else open_clip's measurement of the "
             f"same OpenAI weights, in the metric the source used (mean per-class recall for Pets, Flowers102, Caltech101, "
             f"FGVC Aircraft). `!` marks |delta| > {threshold} points. Best top-1 per dataset in bold.", ""]
    cols = HEADERS[: DELTA + 1] + [""] + HEADERS[DELTA + 1 :]  # a column for the `!` flag after delta
    for dataset, rows in formatted_rows(table):
        lines += [f"## {dataset}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for cells, is_best, flagged in rows:
            if is_best:
                cells[TOP1] = f"**{cells[TOP1]}**"
            cells = cells[: DELTA + 1] + ["!" if flagged else ""] + cells[DELTA + 1 :]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if notes:
        lines += ["## Reproducibility warnings", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def figures(table: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()

    paths = []
    evals = table.dropna(subset=["top1"])
    grid = evals.groupby(["model", "dataset"]).top1.max().unstack("dataset") * 100
    if grid.empty:  # only linear-probe rows: nothing zero-shot to draw
        return paths
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid.iat[i, j]
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, label="top-1 (%)")
    ax.set_title("Zero-shot top-1 (%), model x dataset")
    fig.tight_layout()
    paths.append(out / "heatmap_top1.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for dataset, group in evals.groupby("dataset"):
        # bars in the metric the published number uses, so the two marks are comparable
        metric = group.published_metric.dropna().iloc[0] if group.published_metric.notna().any() else "top1"
        group = group.sort_values(metric)
        labels = [f"{m} ({p})" for m, p in zip(group.model, group.prompts)]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(group) + 1.5))
        y = np.arange(len(group))
        ax.barh(y, 100 * group[metric], color="tab:blue", label=f"zeroshot {metric.replace('_', ' ')}")
        pub = group.published.to_numpy(dtype=float)
        if not np.all(np.isnan(pub)):
            ax.scatter(pub, y, color="tab:red", marker="D", zorder=3, label="published")
        ax.set_yticks(y, labels)
        ax.set_xlabel("accuracy (%)")
        ax.set_xlim(0, 100)
        ax.set_title(dataset)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        paths.append(out / f"bars_{dataset}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def html_page(md_table: pd.DataFrame, notes: list[str], images: list[Path], threshold: float) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>zeroshot report</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}",
             "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:14px}",
             "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}",
             "td:first-child,td:nth-child(2){text-align:left}.best{font-weight:bold}.flag{color:#b00;font-weight:bold}",
             "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head><body>",
             "<h1>zeroshot benchmark report</h1>",
             f"<p>Accuracies in %. <i>published</i>: CLIP paper where it gives one, else open_clip's measurement of the same "
             f"weights, in the metric the source used. Red deltas: |delta| &gt; {threshold} points. Bold: best top-1 per dataset.</p>"]
    for dataset, rows in formatted_rows(md_table):
        parts.append(f"<h2>{html.escape(str(dataset))}</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in HEADERS) + "</tr>")
        for cells, is_best, flagged in rows:
            tds = []
            for i, cell in enumerate(cells):
                cls = " class='best'" if i == TOP1 and is_best else " class='flag'" if i == DELTA and flagged else ""
                tds.append(f"<td{cls}>{html.escape(cell)}</td>")
            parts.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("</table>")
    if notes:
        parts.append("<h2>Reproducibility warnings</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for p in images:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<div><img alt='{p.stem}' src='data:image/png;base64,{data}'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(cfg: DictConfig) -> dict:
    inputs = list(cfg.inputs)
    if cfg.get("suite"):
        from .suite import run_suite

        inputs = [run_suite(cfg)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(inputs)
    for w in caught:
        print(f"warning: {w.message}")
    table, notes = reproducibility(runs, float(cfg.tolerance))
    table = add_linear_probe(add_published(table, float(cfg.delta_threshold)), runs)
    out = make_run_dir(cfg.output_dir)
    table.to_csv(out / "report.csv", index=False)
    (out / "report.md").write_text(markdown(table, notes, cfg.delta_threshold))
    images = figures(table, out)
    (out / "report.html").write_text(html_page(table, notes, images, cfg.delta_threshold))
    for n in notes:
        print(f"warning: {n}")
    summary = table[["model", "dataset", "prompts", "top1", "published", "delta", "flag"]].copy()
    summary["top1"] = (100 * summary["top1"]).round(2)
    print(summary.to_string(index=False, na_rep=""))
    print(f"{len(table)} rows from {len(runs)} runs ({len(caught)} files skipped) -> {out}/report.md, report.html, report.csv")
    return {"report_dir": str(out), "rows": len(table), "skipped": len(caught), "notes": notes}
