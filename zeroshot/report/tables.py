"""The report's tables as markdown and HTML, from one set of formatted rows.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd


def fmt(x, pct: bool = False, signed: bool = False) -> str:
    """The report's one number format: two decimals, empty where there is no number; `pct`: a fraction shown in
    percent, `signed`: a difference, with its sign."""
    if x is None or pd.isna(x):
        return ""
    x = 100 * x if pct else x
    return f"{x:+.2f}" if signed else f"{x:.2f}"


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
                str(r.model), str(r.prompts_label), fmt(r.top1, pct=True), fmt(r.top5, pct=True), fmt(r.mean_per_class_recall, pct=True),
                fmt(r.linear_probe, pct=True),
                f"{r.published:.2f} ({r.published_source})" if not pd.isna(r.published) else str(r.published_note),
                fmt(r.delta, signed=True), str(r.architecture or ""), str(r.checkpoint_sha256 or "")[:12],
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
    """The answer first: each dataset's table, then the extra sections (averages, robustness, comparisons, ...)."""
    lines = ["# zeroshot benchmark report", "", INTRO.format(threshold=threshold), ""]
    cols = HEADERS[: DELTA + 1] + [""] + HEADERS[DELTA + 1 :]  # a column for the `!` flag after delta
    for dataset, rows in formatted_rows(table):
        lines += [f"## {dataset}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for cells, is_best, flagged in rows:
            if is_best:
                cells[TOP1] = f"**{cells[TOP1]}**"
            cells = cells[: DELTA + 1] + ["!" if flagged else ""] + cells[DELTA + 1 :]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += list(extra)
    if notes:
        lines += ["## Reproducibility warnings", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# The page fits its window (1,400 px or 900 px) without scrolling sideways: cells wrap, and a table wider than
# the window (many datasets or columns) scrolls inside its own box, never the page.
STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1.5em;max-width:1300px;color:#222}"
         "table{border-collapse:collapse;margin:0.5em 0 1em;font-size:14px}"
         "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;overflow-wrap:break-word}th{background:#f0f0f0}"
         "td.text,th.text{text-align:left;overflow-wrap:anywhere}#main td:not(.text):not(.pub){white-space:nowrap}.best{font-weight:bold}.flag{color:#b00;font-weight:bold}"
         "tr.sig td{background:#fff3cd}.legend,.notes{font-size:13px;color:#444}"
         ".scroll{max-width:100%;overflow-x:auto}details{margin:0.8em 0}summary{cursor:pointer;font-size:1.2em;font-weight:bold}"
         "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}sup{color:#555}")
MAIN_HEADERS = ["dataset", "model", "prompts", "top-1", "top-5", "mean per-class recall", "linear probe", "published",
                "delta", "errors"]
DETAIL_HEADERS = ["dataset", "model", "prompts", "architecture", "sha256", "version", "precision", "device", "date", "runs"]


def breakable(text: str) -> str:
    """Escaped text that may break after / _ # : (model names, prompt labels), before breaking inside a word."""
    out = html.escape(str(text))
    for ch in "/_#:":
        out = out.replace(ch, ch + "<wbr>")
    return out


def _gallery_link(run_dir, out: Path | None) -> str:
    """A link to the run's error gallery, relative to the report, where the run wrote one."""
    if out is None or not isinstance(run_dir, str) or not (Path(run_dir) / "gallery.html").exists():
        return ""
    href = os.path.relpath(Path(run_dir) / "gallery.html", out)
    return f"<a href='{html.escape(href, quote=True)}'>gallery</a>"


def main_table(table: pd.DataFrame, out: Path | None) -> tuple[str, list[str]]:
    """The answer: one row per model x dataset x prompts, short cells; why a published number is missing goes to a
    numbered footnote (and the cell's tooltip), so no cell is wider than a number. Returns (HTML, footnotes)."""
    notes: list[str] = []
    head = "".join(f"<th{' class=text' if h in ('dataset', 'model', 'prompts') else ''}>{h}</th>" for h in MAIN_HEADERS)
    body = []
    run_dirs = dict(zip(zip(table.model, table.dataset_label, table.prompts_label), table.get("run_dir", [None] * len(table))))
    for dataset, rows in formatted_rows(table):
        for i, (cells, is_best, flagged) in enumerate(rows):
            c = dict(zip(HEADERS, cells))
            published = c["published"]
            if published and not published[:1].isdigit():  # a reason, not a number
                if published not in notes:
                    notes.append(published)
                n = notes.index(published) + 1
                published = f"<span title='{html.escape(published, quote=True)}'>n/a<sup>{n}</sup></span>"
            else:
                value, _, source = published.partition(" ")
                published = f"{html.escape(value)} <small>{html.escape(source)}</small>"
            tds = [f"<td class=text>{breakable(dataset) if i == 0 else ''}</td>",
                   f"<td class=text>{breakable(c['model'])}</td>", f"<td class=text>{breakable(c['prompts'])}</td>",
                   f"<td{' class=best' if is_best else ''}>{c['top-1']}</td>", f"<td>{c['top-5']}</td>",
                   f"<td>{c['mean per-class recall']}</td>", f"<td>{c['linear probe']}</td>", f"<td class=pub>{published}</td>",
                   f"<td{' class=flag' if flagged else ''}>{c['delta']}</td>",
                   f"<td>{_gallery_link(run_dirs.get((c['model'], dataset, c['prompts'])), out)}</td>"]
            body.append("<tr>" + "".join(tds) + "</tr>")
    foot = ("<ol class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ol>") if notes else ""
    return f"<div class=scroll><table id=main><tr>{head}</tr>" + "".join(body) + "</table></div>" + foot, notes


def details_table(table: pd.DataFrame) -> str:
    """What produced each row (weights, code, hardware, date, repeats), folded below the answer."""
    rows = []
    for dataset, group in formatted_rows(table):
        for cells, _, _ in group:
            c = dict(zip(HEADERS, cells))
            rows.append([str(dataset), *[c[h] for h in DETAIL_HEADERS[1:]]])
    head = "".join(f"<th>{h}</th>" for h in DETAIL_HEADERS)
    return (f"<div class=scroll><table><tr>{head}</tr>" + "".join(
        "<tr>" + "".join(f"<td class=text>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows) + "</table></div>")


def folded(title: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(title)}</summary>{body}</details>" if body else ""


def html_page(md_table: pd.DataFrame, notes: list[str], images: list[Path], threshold: float, *, summaries: str = "",
              folds: str = "", out: Path | None = None) -> str:
    """The answer first (model x dataset, published numbers and deltas beside it), then the summaries (averages,
    robustness, retrieval), then, folded, the run details, comparisons, calibration and figures."""
    main, _ = main_table(md_table, out)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
             f"<title>zeroshot report</title><style>{STYLE}</style></head><body>",
             "<h1>zeroshot benchmark report</h1>", "<h2>Model x dataset</h2>", main,
             f"<p class=legend>{html.escape(INTRO.format(threshold=threshold))} Red deltas are flagged; "
             "`errors` opens the run's gallery of the images it got wrong.</p>"]
    if notes:
        parts.append("<h2>Reproducibility warnings</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append(summaries)
    parts.append(folded("Run details: weights, code, hardware", details_table(md_table)))
    parts.append(folds)
    figures = "".join(f"<div><img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'></div>"
                      for p in images)
    parts.append(folded("Figures", figures))
    parts.append("</body></html>")
    return "\n".join(parts)


LONG_CELL = 60  # characters: a longer cell (a list of missing datasets) becomes a numbered note below its table


def frame_html(frame: pd.DataFrame, digits: int = 2) -> str:
    """A summary table: numbers right-aligned, text left; a long text cell is a numbered note under the table (and
    the cell's tooltip), so no column is wider than its short cells; a table wider than the window scrolls in its box."""
    notes: list[str] = []

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "<td></td>"
        if isinstance(v, (float, np.floating)):
            return f"<td>{v:.{digits}f}</td>"
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"<td>{v}</td>"
        text = str(v)
        if len(text) <= LONG_CELL:
            return f"<td class=text>{html.escape(text)}</td>"
        notes.append(text)
        return f"<td class=text><span title='{html.escape(text, quote=True)}'>see note {len(notes)}</span></td>"

    # headers break after their underscores (published_same_datasets), not in the middle of a word
    head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    foot = ("<ol class=notes>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ol>") if notes else ""
    return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>{foot}"


def not_run_lines(not_run: list[dict]) -> list[str]:
    if not not_run:
        return []
    return ["## Not run", "", "| model | dataset | why |", "|---|---|---|",
            *[f"| {n['model']} | {n['dataset']} | {n['reason'].replace('|', '/')} |" for n in not_run], ""]
