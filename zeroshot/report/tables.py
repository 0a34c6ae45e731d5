"""The report's tables as markdown and HTML, from one set of formatted rows.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd


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
