"""`zeroshot compare RUN_OR_DIR ...`: paired comparison of runs that share images (report/compare.py builds it).
"""
from __future__ import annotations

from zeroshot.errors import ReportError
from zeroshot.log import log, plural
from zeroshot.report.compare import build_comparison, load_run


def compare(cfg) -> dict:
    """The `compare` command: runs (or directories of runs) in, compare.csv / compare.md / figures out."""
    from zeroshot.record import run_directory
    from zeroshot.report.compare_gallery import write_compare_gallery
    from zeroshot.report.compare_render import (
        difference_figures,
        markdown_lines,
        write_csv,
    )
    from zeroshot.report import compositionality as selection
    from zeroshot.report.compare import Comparison
    from zeroshot.report.runs import load_runs, reproducibility

    c = cfg.compare
    # compositionality runs pair per instance (report/compositionality.py), beside classification's per image
    sel_rows, sel_notes = selection.paired_rows(selection.compositionality_table(
        selection.load_compositionality_runs(list(cfg.inputs)), float("inf")), int(c.n_boot), int(c.seed))
    try:
        table, notes = reproducibility(load_runs(list(cfg.inputs)), float(cfg.tolerance))
        comp = build_comparison(table, int(c.n_boot), int(c.seed), float(c.alpha), int(c.top_k))
    except ReportError:
        if not sel_rows:
            raise
        comp, notes = Comparison(), []
    if not comp.rows and not sel_rows:
        raise ReportError(f"Nothing to compare under {', '.join(map(str, cfg.inputs))}: no two runs with different weights "
                          "or prompts hold the same images (dataset fingerprint and split). "
                          + next(iter(comp.notes + sel_notes), "Give runs of one dataset by two models or prompt sets"))
    with run_directory(cfg.output_dir, record=False) as compare_dir:  # removed if writing it fails
        out = compare_dir.path
        figures, link = [], []
        if comp.rows:
            write_csv(comp, out / "compare.csv")
            figures = difference_figures(comp, out)
            gallery = write_compare_gallery(comp, out, load_run)
            link = [f"Images one system got right and the other wrong: [compare_gallery.html]({gallery.name})", ""] if gallery else []
        if sel_rows:
            import pandas as pd

            pd.DataFrame(sel_rows).to_csv(out / "compare_compositionality.csv", index=False)
        lines = markdown_lines(comp, figures) if comp.rows else []
        (out / "compare.md").write_text("\n".join(["# zeroshot paired comparison", "", *link, *lines,
                                                   *selection.paired_markdown(sel_rows)]))
    for row in sel_rows:
        print(f"{row['dataset']}: {row['model_a']} vs {row['model_b']}: {100 * row['diff']:+.2f} points ({row['outcome']}), "
              f"McNemar p {row['mcnemar_p']:.3g} over {row['n_instances']} instances")
    for n in notes + comp.notes + sel_notes:
        log.warning(n)
    for s in comp.suite:
        print(f"{s['system_a']} vs {s['system_b']}: {s['wins']} wins, {s['ties']} ties, {s['losses']} losses over "
              f"{plural(s['n_datasets'], 'dataset')}; mean difference {100 * s['mean_diff']:+.2f} points "
              f"[{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]")
    print(f"{plural(len(comp.rows), 'comparison')} over {plural(len(comp.suite), 'pair')}, "
          f"{plural(len(sel_rows), 'compositionality pair')} -> {out}/compare.md")
    return {"compare_dir": str(out), "rows": len(comp.rows), "pairs": len(comp.suite), "notes": comp.notes + sel_notes,
            "compositionality": sel_rows}
