"""`zeroshot compare RUN_OR_DIR ...`: paired comparison of runs that share images (report/compare.py builds it).
"""
from __future__ import annotations

from zeroshot.errors import ReportError
from zeroshot.log import log, plural
from zeroshot.report.compare import build_comparison, load_run


def compare(cfg) -> dict:
    """The `compare` command: runs (or directories of runs) in, compare.csv / compare.md / figures out."""
    from zeroshot.record import make_run_dir
    from zeroshot.report.compare_gallery import write_compare_gallery
    from zeroshot.report.compare_render import (
        difference_figures,
        markdown_lines,
        write_csv,
    )
    from zeroshot.report.runs import load_runs, reproducibility

    runs = load_runs(list(cfg.inputs))
    table, notes = reproducibility(runs, float(cfg.tolerance))
    c = cfg.compare
    comp = build_comparison(table, int(c.n_boot), int(c.seed), float(c.alpha), int(c.top_k))
    if not comp.rows:
        raise ReportError(f"Nothing to compare under {', '.join(map(str, cfg.inputs))}: no two runs with different weights "
                          "or prompts hold the same images (dataset fingerprint and split). "
                          + (comp.notes[0] if comp.notes else "Give runs of one dataset by two models or prompt sets"))
    out = make_run_dir(cfg.output_dir)
    write_csv(comp, out / "compare.csv")
    figures = difference_figures(comp, out)
    gallery = write_compare_gallery(comp, out, load_run)
    link = [f"Images one system got right and the other wrong: [compare_gallery.html]({gallery.name})", ""] if gallery else []
    (out / "compare.md").write_text("\n".join(["# zeroshot paired comparison", "", *link, *markdown_lines(comp, figures)]))
    for n in notes + comp.notes:
        log.warning(n)
    for s in comp.suite:
        print(f"{s['system_a']} vs {s['system_b']}: {s['wins']} wins, {s['ties']} ties, {s['losses']} losses over "
              f"{plural(s['n_datasets'], 'dataset')}; mean difference {100 * s['mean_diff']:+.2f} points "
              f"[{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]")
    print(f"{plural(len(comp.rows), 'comparison')} over {plural(len(comp.suite), 'pair')} -> {out}/compare.md, compare.csv")
    return {"compare_dir": str(out), "rows": len(comp.rows), "pairs": len(comp.suite), "notes": comp.notes}
