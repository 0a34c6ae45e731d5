"""What a Comparison looks like: compare.csv, markdown and HTML sections (shared by `compare` and `report`), the
per-pair difference figures (drawn by figures/report.py), and the report's calibration section with each run's
reliability diagram."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.figures.report import plot_differences
from zeroshot.log import plural
from zeroshot.record import slug
from zeroshot.report.tables import fmt, frame_html
from zeroshot.runs import RunRecord

SIG, CI_MARK = "*", "°"
CSV_COLUMNS = ["system_a", "system_b", "dataset", "split", "dataset_fingerprint", "metric", "per_image", "a", "b", "diff",
               "ci_low", "ci_high", "n_boot", "seed", "n_images", "both_right", "only_a", "only_b", "both_wrong",
               "mcnemar_p", "p_holm", "verdict", "wins", "ties", "losses", "n_datasets", "run_a", "run_b"]


def legend(settings: dict) -> str:
    level = round(100 * settings["level"])
    return (f"Differences are A - B in points. `{SIG}` marks a difference that McNemar's exact test on the images only one "
            f"of the two got right finds significant at alpha = {settings['alpha']} after Holm's correction over the "
            f"datasets of the pair; `{CI_MARK}` marks a metric that is not a mean over images (so has no McNemar test) whose "
            f"{level}% paired bootstrap CI excludes 0, uncorrected. CIs are percentile intervals of {settings['n_boot']} "
            f"paired bootstrap resamples (seed {settings['seed']}): both runs scored on the same resampled images. "
            "The suite's mean difference resamples images within each dataset. W/T/L counts datasets where the row "
            "wins, ties (no significant difference) or loses against the column.")


def mark(r: dict) -> str:
    if "p_holm" in r:
        return SIG if r["verdict"] != "tie" else ""
    return CI_MARK if r["ci_low"] > 0 or r["ci_high"] < 0 else ""


def pts(x) -> str:  # a difference of fractions, in points
    return fmt(x, pct=True, signed=True)


def pct(x) -> str:  # a fraction, in %
    return fmt(x, pct=True)


def pval(p) -> str:
    return "" if p is None else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def pairs(comp) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["system_a"], r["system_b"]) for r in comp.rows))


def write_csv(comp, path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "boot"} for r in comp.rows]
    rows += [{**s, "dataset": f"(mean over {plural(s['n_datasets'], 'dataset')})", "diff": s["mean_diff"], "n_boot": comp.settings["n_boot"],
              "seed": comp.settings["seed"]} for s in comp.suite]
    frame = pd.DataFrame(rows)
    for col in ("n_images", "both_right", "only_a", "only_b", "both_wrong", "wins", "ties", "losses", "n_datasets"):
        if col in frame:  # counts stay integers beside the suite rows that lack them
            frame[col] = frame[col].astype("Int64")
    frame.reindex(columns=[c for c in CSV_COLUMNS if c in frame] + [c for c in frame if c not in CSV_COLUMNS]).to_csv(path, index=False)


PAIR_HEADERS = ["dataset", "metric", "A", "B", "A - B", "95% CI", "", "both right", "only A", "only B", "both wrong",
                "McNemar p", "Holm p"]


def pair_cells(r: dict) -> list[str]:
    return [r["dataset"], r["metric"], pct(r["a"]), pct(r["b"]), pts(r["diff"]), f"[{pts(r['ci_low'])}, {pts(r['ci_high'])}]",
            mark(r), *[str(r.get(k, "")) for k in ("both_right", "only_a", "only_b", "both_wrong")],
            pval(r.get("mcnemar_p")), pval(r.get("p_holm"))]


def suite_sentence(s: dict) -> str:
    return (f"Over {s['n_datasets']} dataset{'s' if s['n_datasets'] != 1 else ''} ({s['metric']}): A wins {s['wins']}, ties {s['ties']}, loses {s['losses']} "
            f"(alpha = {s['alpha']}, Holm); mean difference {pts(s['mean_diff'])} points, 95% CI "
            f"[{pts(s['ci_low'])}, {pts(s['ci_high'])}].")


def change_lines(c: dict) -> list[str]:
    lines = []
    if c["classes"]:
        lines += [f"Recall differs most on {c['dataset']} (right / images):", "",
                  "| class | A | B | A - B |", "|---|---|---|---|"]
        lines += [f"| {x['class']} | {x['right_a']}/{x['support']} | {x['right_b']}/{x['support']} | {pts(x['recall_change'])} |"
                  for x in c["classes"]]
        lines.append("")
    for what, title in (("appear", "appear in B"), ("vanish", "vanish from A")):
        if c[what]:
            lines += [f"Confusions on {c['dataset']} that {title} (true -> predicted, among each run's most frequent):", "",
                      "| true | predicted | A | B |", "|---|---|---|---|"]
            lines += [f"| {x['true']} | {x['predicted']} | {x['count_a']} | {x['count_b']} |" for x in c[what]] + [""]
    return lines


def table_md(headers: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "/")  # noqa: E731
    return ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(map(esc, r)) + " |" for r in rows], ""]


def markdown_lines(comp, figures: list[Path] = ()) -> list[str]:
    if not comp.rows:  # rows that share images but could not be compared say why
        return ["## Paired comparisons", "", "Not compared:", "", *[f"- {n}" for n in comp.notes], ""] if comp.notes else []
    lines = ["## Paired comparisons", "", legend(comp.settings), ""]
    for a, b in pairs(comp):
        lines += [f"### A = {a}, B = {b}", ""]
        lines += table_md(PAIR_HEADERS, [pair_cells(r) for r in comp.rows if (r["system_a"], r["system_b"]) == (a, b)])
        lines += [suite_sentence(s) for s in comp.suite if (s["system_a"], s["system_b"]) == (a, b)] + [""]
        for c in comp.changes:
            if (c["system_a"], c["system_b"]) == (a, b):
                lines += change_lines(c)
        lines += [f"![{a} - {b}]({f.name})" for f in figures if f.stem == figure_stem(a, b)] + [""]
    lines += ["## Suite: model x dataset", "", "The dataset's main metric (%), its rank there (1 = best) and the mean rank.", ""]
    lines += table_md(list(comp.ranks.columns), [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r]
                                                 for r in comp.ranks.itertuples(index=False)])
    lines += ["## Wins / ties / losses", "", "Row against column, over the datasets both ran.", ""]
    lines += table_md(["", *comp.wtl.columns], [[i, *row] for i, row in zip(comp.wtl.index, comp.wtl.to_numpy().tolist())])
    if comp.notes:
        lines += ["Not compared:", "", *[f"- {n}" for n in comp.notes], ""]
    return lines


def html_table(headers, rows, classes=None) -> str:
    out = ["<div class=scroll><table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>"]
    for i, r in enumerate(rows):
        cls = (classes or {}).get(i, "")
        out.append(f"<tr{f' class={cls!r}' if cls else ''}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table></div>"


def html_section(comp) -> str:
    """The comparison as HTML: significant rows in class 'sig' (marked and coloured), and the legend."""
    if not comp.rows:
        return "<h2>Paired comparisons</h2><p>Not compared:</p><ul>" + "".join(
            f"<li>{html.escape(n)}</li>" for n in comp.notes) + "</ul>" if comp.notes else ""
    parts = ["<h2>Paired comparisons</h2>", f"<p class='legend'>{html.escape(legend(comp.settings))} "
             "Marked rows are also shaded.</p>"]
    for a, b in pairs(comp):
        rows = [r for r in comp.rows if (r["system_a"], r["system_b"]) == (a, b)]
        parts.append(f"<h3>A = {html.escape(a)}, B = {html.escape(b)}</h3>")
        parts.append(html_table(PAIR_HEADERS, [pair_cells(r) for r in rows], {i: "sig" for i, r in enumerate(rows) if mark(r)}))
        parts += [f"<p>{html.escape(suite_sentence(s))}</p>" for s in comp.suite if (s["system_a"], s["system_b"]) == (a, b)]
        for c in comp.changes:
            if (c["system_a"], c["system_b"]) == (a, b) and (c["classes"] or c["appear"] or c["vanish"]):
                parts.append(f"<details><summary>What changed on {html.escape(c['dataset'])}</summary>")
                if c["classes"]:
                    parts.append(html_table(["class", "A right/images", "B right/images", "A - B"],
                                            [[x["class"], f"{x['right_a']}/{x['support']}", f"{x['right_b']}/{x['support']}",
                                              pts(x["recall_change"])] for x in c["classes"]]))
                for what in ("appear", "vanish"):
                    if c[what]:
                        parts.append(f"<p>Confusions that {'appear in B' if what == 'appear' else 'vanish from A'}:</p>")
                        parts.append(html_table(["true", "predicted", "A", "B"],
                                                [[x["true"], x["predicted"], x["count_a"], x["count_b"]] for x in c[what]]))
                parts.append("</details>")
    parts.append("<h2>Suite: model x dataset</h2><p>The dataset's main metric (%), its rank there (1 = best), mean rank.</p>")
    parts.append(frame_html(comp.ranks))
    parts.append("<h2>Wins / ties / losses</h2><p>Row against column, over the datasets both ran.</p><div class=scroll>"
                 + comp.wtl.to_html() + "</div>")
    if comp.notes:
        parts.append("<p>Not compared:</p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in comp.notes) + "</ul>")
    return "\n".join(parts)


def figure_stem(a: str, b: str) -> str:
    return slug(f"compare_{a}_vs_{b}")[:150]


def difference_figures(comp, out: Path) -> list[Path]:
    """Per pair: each dataset's A - B (tested metric) with its CI, sorted, significant ones filled; and the mean."""
    paths = []
    for a, b in pairs(comp):
        rows = sorted([r for r in comp.rows if (r["system_a"], r["system_b"]) == (a, b) and "mcnemar_p" in r],
                      key=lambda r: r["diff"])
        # a mean over one dataset is that dataset again: drawn only over two or more
        suite = [s for s in comp.suite if (s["system_a"], s["system_b"]) == (a, b) and s["n_datasets"] > 1]
        paths.append(plot_differences(rows, suite, out / f"{figure_stem(a, b)}.png", f"A = {a}\nB = {b}",
                                      level=comp.settings["level"], mark=SIG))
    return paths


CALIBRATION_INTRO = ("Calibration of each run's own probabilities (softmax, or SigLIP's sigmoid renormalized over the "
                     "classes): ECE over 15 equal-width confidence bins (top label), NLL (nats) and Brier score; with a "
                     "fitted temperature, the ECE after scaling.")


def calibration_rows(table: pd.DataFrame) -> list[dict]:
    rows = []
    for r in table[table.run_dir.notna()].itertuples() if "run_dir" in table else []:
        path = Path(r.run_dir) / "metrics.json"
        m = RunRecord.from_json(path) if path.exists() else RunRecord("eval")
        if m.get("ece") is None:
            continue
        rows.append({"model": r.model, "dataset": r.dataset_label, "prompts": r.prompts_label, "probability": m.get("probability"),
                     "ECE (%)": 100 * m["ece"], "NLL": m["nll"], "Brier": m["brier"],
                     "T": (m.get("calibration") or {}).get("temperature"),
                     "ECE after T (%)": 100 * m["ece_temperature_scaled"] if m.get("ece_temperature_scaled") is not None else None,
                     "diagram": Path(r.run_dir) / "reliability_diagram.png"})
    return rows


def calibration_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = [c for c in rows[0] if c != "diagram"]
    cells = [["" if r[c] is None else f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    return ["## Calibration", "", CALIBRATION_INTRO, "", *table_md(cols, cells)]


def calibration_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    frame = pd.DataFrame([{k: np.nan if v is None else v for k, v in r.items() if k != "diagram"} for r in rows])
    parts = ["<h2>Calibration</h2>", f"<p>{html.escape(CALIBRATION_INTRO)}</p>",
             frame_html(frame, 3), "<div class='diagrams'>"]
    for r in rows:
        if r["diagram"].exists():
            data = base64.b64encode(r["diagram"].read_bytes()).decode()
            alt = html.escape(f"reliability diagram: {r['model']} on {r['dataset']} ({r['prompts']})", quote=True)
            parts.append(f"<img class='reliability' alt=\"{alt}\" src='data:image/png;base64,{data}' style='max-width:420px'>")
    return "\n".join(parts + ["</div>"])
