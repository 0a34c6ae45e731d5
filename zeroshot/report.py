"""Benchmark reports: `python -m zeroshot report [results dirs...]`.

Collects every run's metrics.json into one table (model x dataset x prompts), puts the published numbers
beside it (with the metric each source used), flags large gaps and irreproducible repeats, and writes
report.md, report.csv, report.html (figures inlined) and the figures. With `suite=NAME` it first runs the
suite's evaluations whose data is present.
"""
from __future__ import annotations

from .errors import ReportError  # noqa: F401  (re-exported)

import base64
import html
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from .results import make_run_dir, pyplot, slug

PUBLISHED = Path(__file__).with_name("reference") / "published.csv"
REQUIRED = ("top1", "top5", "mean_per_class_recall", "model", "dataset", "prompts")
METRIC_COLUMNS = ["top1", "top5", "mean_per_class_recall"]
# A row is one set of weights on one set of images with one set of prompts: what the numbers depend on.
ROW_KEY = ["checkpoint_sha256", "dataset_fingerprint", "split", "prompts_hash"]



def load_runs(inputs: list[str | Path]) -> pd.DataFrame:
    """One record per complete run (eval) or probe; a malformed metrics.json is skipped with a warning."""
    records = []
    for root in map(Path, inputs):
        if not root.exists():
            raise ReportError(f"Results directory {root} does not exist. Pass directories that hold runs (default: results/)")
        for path in sorted(root.rglob("metrics.json")):
            try:
                m = json.loads(path.read_text())
                kind = m.get("kind", "eval")
                if kind == "retrieval":  # read by retrieval_report, into its own table
                    continue
                needed = ("top1", "model", "dataset") if kind == "linear_probe" else REQUIRED
                missing = [k for k in needed if k not in m]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                float(m["top1"])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                warnings.warn(f"skipping {path}: not a complete metrics.json ({e})")
                continue
            versions = m.get("versions") or {}
            bench = m.get("benchmark") or {}
            records.append({
                "kind": kind, "model": m["model"], "model_release": m.get("model_release"),
                "architecture": m.get("architecture", ""), "dataset": m["dataset"],
                "dataset_label": m.get("dataset_label") or m["dataset"],
                # runs written before fingerprints existed are keyed by what they did record
                "dataset_fingerprint": m.get("dataset_fingerprint") or f"{m['dataset']}:{m.get('n_images')}",
                "split": m.get("split", "test"), "prompts": m.get("prompts", ""),
                "prompts_hash": m.get("prompts_hash") if m.get("prompts_hash") is not None else m.get("prompts", ""),
                "prompts_label": m.get("prompts_label") or m.get("prompts", ""),
                **{k: m.get(k) for k in METRIC_COLUMNS}, **{k: m[k] for k in EXTRA_METRICS if k in m},
                "n_images": m.get("n_images"), "comparable": bool(m.get("comparable", False)),
                "not_comparable_reason": m.get("not_comparable_reason") or ("run recorded no benchmark" if "comparable" not in m else ""),
                "benchmark_metric": bench.get("metric"), "checkpoint_sha256": m.get("checkpoint_sha256") or "",
                "precision": m.get("precision"), "device": m.get("device"), "date": m.get("timestamp") or path.parent.name,
                "version": versions.get("zeroshot"), "git_commit": (versions.get("git_commit") or "")[:10],
                "run_dir": str(path.parent),
            })
    if not records:
        raise ReportError(f"No runs found under {', '.join(map(str, inputs))} (no complete metrics.json). "
                          "Run `python -m zeroshot eval ...` first, or point the report at the directories that hold runs.")
    return pd.DataFrame(records)


EXTRA_METRICS = ("macro_f1", "worst_group_top1", "worst_group_top5", "worst_region_top1", "mean_average_precision")


def reproducibility(runs: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, list[str]]:
    """Keep the latest of repeated runs of one row key; note every repeat whose top-1 disagrees beyond `tolerance`."""
    notes = []
    evals = runs[runs.kind == "eval"].sort_values("date")
    for _, group in evals.groupby(ROW_KEY):
        if len(group) > 1 and group.top1.max() - group.top1.min() > tolerance:
            r = group.iloc[-1]
            notes.append(f"{r.model} / {r.dataset_label} / {r.prompts_label}: {len(group)} runs of the same weights "
                         f"(sha256 {r.checkpoint_sha256[:12]}), images and prompts disagree: top-1 from "
                         f"{100 * group.top1.min():.2f}% to {100 * group.top1.max():.2f}% ({', '.join(group.run_dir)})")
    latest = evals.groupby(ROW_KEY, as_index=False).tail(1).copy()
    latest["n_runs"] = latest.set_index(ROW_KEY).index.map(evals.groupby(ROW_KEY).size()).to_numpy()
    return latest, notes


def published_table() -> pd.DataFrame:
    ref = pd.read_csv(PUBLISHED)
    rank = {"clip_paper": 0, "open_clip": 1}
    return ref.sort_values("source", key=lambda s: s.map(rank), kind="stable").drop_duplicates(["release", "dataset"])


def add_published(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """published / delta in points, in the metric the source used, for runs of a known release on the benchmark's
    canonical split and image count; every other row says why no published number applies."""
    ref = published_table().rename(columns={"source": "published_source", "metric": "published_metric",
                                            "value": "published_value", "release": "model_release"})
    table = table.merge(ref, on=["model_release", "dataset"], how="left")
    published, ours, notes = [], [], []
    for _, r in table.iterrows():
        metric = r["benchmark_metric"] if isinstance(r["benchmark_metric"], str) else r["published_metric"]
        have = isinstance(r["published_metric"], str)
        if not have:
            note = "" if isinstance(r["model_release"], str) else "weights are not a published release"
            published.append(np.nan), ours.append(np.nan), notes.append(note)
        elif not r["comparable"]:
            published.append(np.nan), ours.append(np.nan), notes.append(f"not comparable: {r['not_comparable_reason']}")
        else:
            value = r.get(metric) if metric in r else np.nan
            published.append(r["published_value"]), ours.append(100 * value if value is not None else np.nan)
            notes.append("")
    table["published"] = published
    table["published_note"] = notes
    table["delta"] = np.array(ours, dtype=float) - table["published"].to_numpy(dtype=float)
    table["flag"] = np.where(np.abs(table["delta"]) > threshold, "!", "")
    return table


def add_linear_probe(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The latest probe of the same weights on the same images, beside the zero-shot rows (or as its own row)."""
    key = ["checkpoint_sha256", "dataset_fingerprint", "split"]
    probes = runs[runs.kind == "linear_probe"].sort_values("date").groupby(key, as_index=False).tail(1)
    if probes.empty:
        table["linear_probe"] = np.nan
        return table
    keep = key + ["model", "dataset", "dataset_label", "model_release", "architecture"]
    probes = probes[keep + ["top1"]].rename(columns={"top1": "linear_probe"})
    table = table.merge(probes, on=key, how="outer", suffixes=("", "_probe"))
    for col in ("model", "dataset", "dataset_label", "model_release", "architecture"):
        table[col] = table[col].fillna(table.pop(f"{col}_probe"))
    for col in ("prompts", "prompts_label", "published_note", "flag"):
        table[col] = table[col].fillna("")
    return table


def fmt(x, pct=True) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return f"{100 * x:.2f}" if pct else f"{x:+.2f}"


HEADERS = ["model", "prompts", "top-1", "top-5", "mean per-class recall", "linear probe", "published", "delta",
           "architecture", "sha256", "version", "precision", "device", "date", "runs"]
TOP1, DELTA = HEADERS.index("top-1"), HEADERS.index("delta")


def formatted_rows(table: pd.DataFrame):
    """Per dataset, best top-1 first: each row's cells as text in HEADERS order, whether it is the dataset's
    best top-1, and whether its delta is flagged. Shared by the markdown and the HTML report."""
    for dataset, group in table.groupby("dataset_label", sort=True):
        best = group.top1.max()
        rows = []
        for r in group.sort_values("top1", ascending=False).itertuples():
            cells = [
                str(r.model), str(r.prompts_label), fmt(r.top1), fmt(r.top5), fmt(r.mean_per_class_recall), fmt(r.linear_probe),
                f"{r.published:.2f} ({r.published_source})" if not pd.isna(r.published) else str(r.published_note),
                fmt(r.delta, pct=False), str(r.architecture or ""), str(r.checkpoint_sha256 or "")[:12],
                f"{r.version or ''} {r.git_commit or ''}".strip(), str(r.precision or ""),
                str(r.device or ""), str(r.date or ""), "" if pd.isna(r.n_runs) else str(int(r.n_runs)),
            ]
            rows.append((cells, r.top1 == best and not np.isnan(best), bool(r.flag)))
        yield dataset, rows


INTRO = ("Accuracies in %. A row is one set of weights (sha256) on one set of images (dataset fingerprint and split) with "
         "one set of prompts (class names and templates, hashed: `name#hash`). `published` is the CLIP paper's number where "
         "it gives one, else open_clip's measurement of the same release, in the metric the benchmark uses; it is shown only "
         "for a known release run on the benchmark's canonical split and image count, and otherwise the cell says why. "
         "`!` marks |delta| > {threshold} points. Best top-1 per dataset in bold.")


def markdown(table: pd.DataFrame, notes: list[str], threshold: float, extra: list[str] = ()) -> str:
    lines = ["# zeroshot benchmark report", "", INTRO.format(threshold=threshold), "", *extra]
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
    grid = evals.groupby(["model", "dataset_label"]).top1.max().unstack("dataset_label") * 100
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
    for dataset, group in evals.groupby("dataset_label"):
        # bars in the metric the published number uses, so the two marks are comparable
        metric = group.benchmark_metric.dropna().iloc[0] if group.benchmark_metric.notna().any() else "top1"
        metric = metric if metric in group and group[metric].notna().any() else "top1"
        group = group.sort_values(metric)
        labels = [f"{m} ({p})" for m, p in zip(group.model, group.prompts_label)]
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
        paths.append(out / f"bars_{slug(dataset)}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def html_page(md_table: pd.DataFrame, notes: list[str], images: list[Path], threshold: float, extra_html: str = "") -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>zeroshot report</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}",
             "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:14px}",
             "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}",
             "td:first-child,td:nth-child(2){text-align:left}.best{font-weight:bold}.flag{color:#b00;font-weight:bold}",
             "tr.sig td{background:#fff3cd}.legend{font-size:13px;color:#444}",
             "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head><body>",
             "<h1>zeroshot benchmark report</h1>",
             f"<p>{html.escape(INTRO.format(threshold=threshold))} Red deltas are flagged.</p>"]
    parts.append(extra_html)
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


def not_run_lines(not_run: list[dict]) -> list[str]:
    if not not_run:
        return []
    return ["## Not run", "", "| model | dataset | why |", "|---|---|---|",
            *[f"| {n['model']} | {n['dataset']} | {n['reason'].replace('|', '/')} |" for n in not_run], ""]


def build_report(cfg: DictConfig) -> dict:
    from . import aggregates

    inputs, not_run = list(cfg.inputs), []
    if cfg.get("suite"):
        from .suite import run_suite

        results, not_run = run_suite(cfg)
        inputs = [results]
    from . import retrieval_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retrieval_runs = retrieval_report.load_retrieval_runs(inputs)
        try:
            runs = load_runs(inputs)
        except ReportError:
            if retrieval_runs.empty:
                raise
            return retrieval_report.retrieval_only_report(cfg, retrieval_runs, not_run)
    for w in caught:
        print(f"warning: {w.message}")
    table, notes = reproducibility(runs, float(cfg.tolerance))
    table = add_linear_probe(add_published(table, float(cfg.delta_threshold)), runs)
    out = make_run_dir(cfg.output_dir)
    table.to_csv(out / "report.csv", index=False)
    open_clip_table = pd.read_csv(PUBLISHED)  # the averages compare with open_clip's own figures, not the paper's
    avg35, robust = aggregates.openclip_35(table, open_clip_table), aggregates.robustness(table, open_clip_table)
    for name, frame in (("average_35.csv", avg35), ("robustness.csv", robust)):
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    from .compare import report_section  # paired comparisons of rows that share images, and calibration

    compare_md, compare_html, compare_figures = report_section(table, cfg, out)
    retrieval = retrieval_report.retrieval_table(retrieval_runs, float(cfg.delta_threshold))
    avg38 = retrieval_report.datacomp_38(table, retrieval)
    for name, frame in (("retrieval.csv", retrieval), ("average_38.csv", avg38)):
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    extra = (aggregates.markdown(avg35, robust) + retrieval_report.markdown(retrieval, avg38) + compare_md
             + not_run_lines(not_run))
    (out / "report.md").write_text(markdown(table, notes, cfg.delta_threshold, extra))
    images = figures(table, out) + compare_figures
    if aggregates.robustness_figure(robust, out / "robustness.png"):
        images.append(out / "robustness.png")
    extra_html = "".join(f"<h2>{title}</h2>{frame.to_html(index=False, na_rep='', float_format=lambda x: f'{x:.2f}')}"
                         for title, frame in (("open_clip's 35 datasets: average", avg35),
                                              ("ImageNet and its distribution shifts", robust),
                                              ("Image-text retrieval", retrieval), ("DataComp's 38 tasks: average", avg38))
                         if not frame.empty)
    extra_html += compare_html
    if not_run:
        extra_html += "<h2>Not run</h2><ul>" + "".join(
            f"<li>{html.escape(n['model'])} x {html.escape(n['dataset'])}: {html.escape(n['reason'])}</li>" for n in not_run) + "</ul>"
    (out / "report.html").write_text(html_page(table, notes, images, cfg.delta_threshold, extra_html))
    for n in notes:
        print(f"warning: {n}")
    summary = table[["model", "dataset_label", "prompts_label", "top1", "published", "delta", "flag"]].copy()
    summary["top1"] = (100 * summary["top1"]).round(2)
    print(summary.to_string(index=False, na_rep=""))
    print(f"{len(table)} rows from {len(runs)} runs ({len(caught)} files skipped) -> {out}/report.md, report.html, report.csv")
    return {"report_dir": str(out), "rows": len(table), "skipped": len(caught), "notes": notes, "not_run": not_run,
            "average_35": avg35.to_dict("records"), "robustness": robust.to_dict("records"),
            "retrieval": retrieval.to_dict("records"), "average_38": avg38.to_dict("records")}
