"""A benchmark report from run records: every run's metrics.json in one table (model x dataset x prompts), the
published numbers beside it (with the metric each source used), large gaps and irreproducible repeats
flagged, the cross-dataset views, paired comparisons and calibration; report.md, report.csv, report.html
(figures inlined) and the figures. It reads runs and never launches one (a suite does that, then calls this).
"""
from __future__ import annotations

import html
import warnings

import pandas as pd
from omegaconf import DictConfig

from zeroshot.errors import ReportError
from zeroshot.log import log, plural
from zeroshot.record import make_run_dir
from zeroshot.report.published import PUBLISHED, add_linear_probe, add_published
from zeroshot.report.runs import load_runs, reproducibility
from zeroshot.report.tables import frame_html, html_page, markdown, not_run_lines


def build_report(cfg: DictConfig, inputs: list | None = None, not_run: list[dict] | None = None) -> dict:
    """The report of the runs under `inputs` (default cfg.inputs); `not_run` lists pairs a suite could not run."""
    from zeroshot.report import aggregates, multilingual, waffleclip
    from zeroshot.report import compositionality as compositionality_report
    from zeroshot.report import retrieval as retrieval_report

    inputs, not_run = list(cfg.inputs if inputs is None else inputs), list(not_run or [])

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
            return retrieval_report.retrieval_only_report(cfg, retrieval_runs, not_run, selection)
    for w in caught:
        log.warning("%s", w.message)
    table, notes = reproducibility(runs, float(cfg.tolerance))
    table = add_linear_probe(add_published(table, float(cfg.delta_threshold)), runs)
    out = make_run_dir(cfg.output_dir)
    table.to_csv(out / "report.csv", index=False)
    open_clip_table = pd.read_csv(PUBLISHED)  # the averages compare with open_clip's own figures, not the paper's
    avg35, robust = aggregates.openclip_35(table, open_clip_table), aggregates.robustness(table, open_clip_table)
    for name, frame in (("average_35.csv", avg35), ("robustness.csv", robust)):
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    from zeroshot.report.compare import report_section

    compare_md, compare_html, compare_figures = report_section(table, cfg, out)
    retrieval = retrieval_report.retrieval_table(retrieval_runs, float(cfg.delta_threshold))
    avg38 = retrieval_report.datacomp_38(table, retrieval)
    for name, frame in (("retrieval.csv", retrieval), ("average_38.csv", avg38)):
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    languages = multilingual.multilingual_table(table, retrieval)  # language x task per model
    if not languages.empty:
        languages.to_csv(out / "multilingual.csv", index=False)
    waffle = waffleclip.waffleclip_table(table)  # WaffleCLIP's published numbers beside runs of their protocols
    for name, frame in (("waffleclip.csv", waffle), ("compositionality.csv", selection)):
        if not frame.empty:
            frame.to_csv(out / name, index=False)
    extra = (aggregates.markdown(avg35, robust) + retrieval_report.markdown(retrieval, avg38) + waffleclip.markdown(waffle)
             + compositionality_report.report_lines(selection, cfg) + multilingual.markdown(languages) + compare_md
             + not_run_lines(not_run))
    (out / "report.md").write_text(markdown(table, notes, cfg.delta_threshold, extra))
    images = aggregates.heatmap_and_bars(table, out) + compare_figures
    if aggregates.robustness_figure(robust, out / "robustness.png"):
        images.append(out / "robustness.png")
    summaries = "".join(f"<h2>{title}</h2>{frame_html(frame)}" for title, frame in (("open_clip's 35 datasets: average", avg35),
                                              ("ImageNet and its distribution shifts", robust),
                                              ("Image-text retrieval", retrieval), ("DataComp's 38 tasks: average", avg38),
                                              ("WaffleCLIP's published results", waffle), ("Multilingual", languages),
                                              ("Compositionality (image-caption selection)", selection))
                        if not frame.empty)
    if not_run:
        summaries += "<h2>Not run</h2><ul>" + "".join(
            f"<li>{html.escape(n['model'])} x {html.escape(n['dataset'])}: {html.escape(n['reason'])}</li>" for n in not_run) + "</ul>"
    (out / "report.html").write_text(html_page(table, notes, images, cfg.delta_threshold, summaries, compare_html, out))
    for n in notes:
        log.warning("%s", n)
    summary = table[["model", "dataset_label", "prompts_label", "top1", "published", "delta", "flag"]].copy()
    summary["top1"] = (100 * summary["top1"]).round(2)
    print(summary.to_string(index=False, na_rep=""))
    print(f"{plural(len(table), 'row')} from {plural(len(runs), 'run')} ({plural(len(caught), 'file')} skipped) -> "
          f"{out}/report.md, report.html, report.csv")
    return {"report_dir": str(out), "rows": len(table), "skipped": len(caught), "notes": notes, "not_run": not_run,
            "average_35": avg35.to_dict("records"), "robustness": robust.to_dict("records"),
            "retrieval": retrieval.to_dict("records"), "average_38": avg38.to_dict("records"),
            "compositionality": selection.to_dict("records"), "multilingual": languages.to_dict("records")}
