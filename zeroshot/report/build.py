"""A benchmark report from run records: every run's metrics.json in one table (model x dataset x prompts), the
published numbers beside it (with the metric each source used), large gaps and irreproducible repeats
flagged, the cross-dataset views, paired comparisons and calibration; report.md, report.csv, report.html
(figures inlined) and the figures. It reads runs and never launches one (a suite does that, then calls this).
"""
from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from zeroshot.errors import ReportError
from zeroshot.log import log, plural
from zeroshot.record import run_directory
from zeroshot.report import aggregates
from zeroshot.report.published import PUBLISHED, add_linear_probe, add_published
from zeroshot.report.runs import load_runs, reproducibility
from zeroshot.report.tables import frame_html, html_page, markdown, not_run_lines


@dataclass
class Views:
    """The report's tables beside the main one (each empty where no run fills it)."""

    avg35: pd.DataFrame  # open_clip's 35 datasets: average
    robust: pd.DataFrame  # ImageNet and its distribution shifts
    retrieval: pd.DataFrame
    avg38: pd.DataFrame  # DataComp's 38 tasks: average
    waffle: pd.DataFrame  # WaffleCLIP's published numbers beside runs of their protocols
    languages: pd.DataFrame  # language x task per model
    selection: pd.DataFrame  # compositionality

    def sections(self) -> list[tuple[str, str, pd.DataFrame]]:
        """(CSV name, HTML title, table) in the report's order."""
        return [("average_35.csv", "open_clip's 35 datasets: average", self.avg35),
                ("robustness.csv", "ImageNet and its distribution shifts", self.robust),
                ("retrieval.csv", "Image-text retrieval", self.retrieval),
                ("average_38.csv", "DataComp's 38 tasks: average", self.avg38),
                ("waffleclip.csv", "WaffleCLIP's published results", self.waffle),
                ("multilingual.csv", "Multilingual", self.languages),
                ("compositionality.csv", "Compositionality (image-caption selection)", self.selection)]


def build_report(cfg: DictConfig, inputs: list | None = None, not_run: list[dict] | None = None) -> dict:
    """The report of the runs under `inputs` (default cfg.inputs); `not_run` lists pairs a suite could not run."""
    from zeroshot.report import retrieval as retrieval_report
    from zeroshot.report.compare import report_section

    inputs, not_run = list(cfg.inputs if inputs is None else inputs), list(not_run or [])
    runs, retrieval_runs, selection, skipped = load_inputs(cfg, inputs)
    if runs is None:
        return retrieval_report.retrieval_only_report(cfg, retrieval_runs, not_run, selection)
    table, notes = reproducibility(runs, float(cfg.tolerance))
    table = add_linear_probe(add_published(table, float(cfg.delta_threshold)), runs)
    views = summary_views(table, retrieval_runs, selection, float(cfg.delta_threshold))
    with run_directory(cfg.output_dir, record=False) as report_dir:
        out = report_dir.path
        compare_md, compare_html, compare_figures = report_section(table, cfg, out)
        write_csvs(out, table, views)
        write_markdown(out, cfg, table, notes, views, compare_md + not_run_lines(not_run))
        images = aggregates.heatmap_and_bars(table, out) + compare_figures
        if aggregates.robustness_figure(views.robust, out / "robustness.png"):
            images.append(out / "robustness.png")
        summaries = "".join(f"<h2>{title}</h2>{frame_html(frame)}" for _, title, frame in views.sections()
                            if not frame.empty) + not_run_html(not_run)
        (out / "report.html").write_text(html_page(table, notes, images, cfg.delta_threshold, summaries=summaries,
                                                   folds=compare_html, out=out))
    for n in notes:
        log.warning("%s", n)
    summary = table[["model", "dataset_label", "prompts_label", "top1", "published", "delta", "flag"]].copy()
    summary["top1"] = (100 * summary["top1"]).round(2)
    print(summary.to_string(index=False, na_rep=""))
    print(f"{plural(len(table), 'row')} from {plural(len(runs), 'run')} ({plural(skipped, 'file')} skipped) -> "
          f"{out}/report.md, report.html, report.csv")
    return {"report_dir": str(out), "rows": len(table), "skipped": skipped, "notes": notes, "not_run": not_run,
            "average_35": views.avg35.to_dict("records"), "robustness": views.robust.to_dict("records"),
            "retrieval": views.retrieval.to_dict("records"), "average_38": views.avg38.to_dict("records"),
            "compositionality": views.selection.to_dict("records"), "multilingual": views.languages.to_dict("records")}


def load_inputs(cfg: DictConfig, inputs: list):
    """(classification runs or None where there are none, retrieval runs, compositionality table, files skipped);
    what was skipped is said in the log."""
    from zeroshot.report import compositionality as compositionality_report
    from zeroshot.report import retrieval as retrieval_report

    runs = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retrieval_runs = retrieval_report.load_retrieval_runs(inputs)
        selection = compositionality_report.compositionality_table(
            compositionality_report.load_compositionality_runs(inputs), float(cfg.delta_threshold))
        try:
            runs = load_runs(inputs)
        except ReportError:
            if retrieval_runs.empty and selection.empty:
                raise
            return None, retrieval_runs, selection, 0
    for w in caught:
        log.warning("%s", w.message)
    return runs, retrieval_runs, selection, len(caught)


def summary_views(table: pd.DataFrame, retrieval_runs: pd.DataFrame, selection: pd.DataFrame, threshold: float) -> Views:
    from zeroshot.report import multilingual, waffleclip
    from zeroshot.report import retrieval as retrieval_report

    open_clip_table = pd.read_csv(PUBLISHED)  # the averages compare with open_clip's own figures, not the paper's
    retrieval = retrieval_report.retrieval_table(retrieval_runs, threshold)
    return Views(aggregates.openclip_35(table, open_clip_table), aggregates.robustness(table, open_clip_table),
                 retrieval, retrieval_report.datacomp_38(table, retrieval), waffleclip.waffleclip_table(table),
                 multilingual.multilingual_table(table, retrieval), selection)


def write_csvs(out: Path, table: pd.DataFrame, views: Views) -> None:
    """report.csv, and a CSV of each view that has rows."""
    table.to_csv(out / "report.csv", index=False)
    for name, _, frame in views.sections():
        if not frame.empty:
            frame.to_csv(out / name, index=False)


def write_markdown(out: Path, cfg: DictConfig, table: pd.DataFrame, notes: list[str], views: Views, tail: list[str]) -> None:
    """report.md: each dataset's table, then the views, then `tail` (comparisons, what did not run)."""
    from zeroshot.report import compositionality, multilingual, waffleclip
    from zeroshot.report import retrieval as retrieval_report

    extra = (aggregates.markdown(views.avg35, views.robust) + retrieval_report.markdown(views.retrieval, views.avg38)
             + waffleclip.markdown(views.waffle) + compositionality.report_lines(views.selection, cfg)
             + multilingual.markdown(views.languages) + list(tail))
    (out / "report.md").write_text(markdown(table, notes, cfg.delta_threshold, extra))


def not_run_html(not_run: list[dict]) -> str:
    if not not_run:
        return ""
    return "<h2>Not run</h2><ul>" + "".join(
        f"<li>{html.escape(n['model'])} x {html.escape(n['dataset'])}: {html.escape(n['reason'])}</li>" for n in not_run) + "</ul>"
