"""WaffleCLIP's published results beside the report's runs: for each run of a release and dataset WaffleCLIP
published, the published method whose protocol the run's recorded class prompts match, its mean ± std over
seeds, and the delta; a run whose protocol differs, or did not record what the match needs, says why.

The published rows are zeroshot/reference/published_waffleclip.csv (tools/make_waffleclip_reference.py, from
ExplainableML/WaffleCLIP results/ at 7a1b8ee). Which of their methods a run can stand beside:
- templates only <-> `clip` (their CLIP baseline): the run's templates are exactly their one template;
- descriptions <-> `gpt_descriptions` (DCLIP): descriptors mode, score_mean, their pattern, replace, and the same
  descriptor file (sha256);
- waffle N <-> `waffle` with waffle_count N: score_mean, their pattern, replace, without the descriptions beside.
Their other methods (the randomized, scrambled, swapped and shared-random controls, waffle_and_gpt) are drawn
differently from anything an eval runs, and are not matched. Only `comparable` runs (canonical split and image
count) get a published number, as in the rest of the report.
"""
from __future__ import annotations

import json

import pandas as pd

from zeroshot.errors import ReportError
from zeroshot.paths import REFERENCE
from zeroshot.report.tables import fmt

PUBLISHED_WAFFLECLIP = REFERENCE / "published_waffleclip.csv"
SOURCE = "WaffleCLIP (Roth et al., ICCV 2023), ExplainableML/WaffleCLIP results/ at 7a1b8ee"
# zeroshot's class-prompt kind -> the published mode it can be compared with
MODE_FOR_KIND = {"templates": "clip", "descriptions": "gpt_descriptions", "waffle": "waffle"}
TEXT = ["method", "mode", "dataset", "release", "template", "descriptor_pattern", "aggregate", "descriptors_sha256",
        "waffle_count", "label_before_text"]
COLUMNS = ["model", "model_release", "dataset", "dataset_label", "prompts_label", "protocol", "seed", "top1",
           "published_method", "published_mean", "published_std", "published_seeds", "delta", "status", "note"]


def published_waffleclip() -> pd.DataFrame:
    ref = pd.read_csv(PUBLISHED_WAFFLECLIP, dtype={c: str for c in TEXT}, keep_default_na=False)
    lacking = [c for c in TEXT + ["n_seeds", "n_images", "split", "top1_mean", "top1_std"] if c not in ref]
    if lacking:
        raise ReportError(f"{PUBLISHED_WAFFLECLIP} lacks columns {', '.join(lacking)}: regenerate it with "
                          "tools/make_waffleclip_reference.py")
    return ref[ref.dataset != ""]  # CUB-200 and Places365: no zeroshot dataset to stand beside


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _shown(value) -> str:
    return "not recorded" if _missing(value) else str(value)


def _protocol(r: dict) -> str:
    kind = r.get("cp_kind")
    if kind == "templates":
        t = json.loads(r["templates"]) if isinstance(r.get("templates"), str) else None
        return "templates" if t is None else f"{len(t)} template{'s' if len(t) != 1 else ''}" + (f" {t[0]!r}" if len(t) == 1 else "")
    if kind == "waffle":
        n = r.get("cp_waffle")
        beside = " + descriptions" if r.get("cp_waffle_with_descriptions") else ""
        return f"waffle {'?' if _missing(n) else int(n)}{beside}, {_shown(r.get('cp_aggregate'))}"
    if kind in ("descriptions", "control"):
        return f"{kind} ({_shown(r.get('cp_descriptions_mode'))}), {_shown(r.get('cp_aggregate'))}"
    return "not recorded"


def _check(r: dict, pub: pd.Series) -> str:
    """'' where the run's recorded protocol is the published one; else why not."""
    kind = r["cp_kind"]
    if kind == "templates":
        if _missing(r.get("templates")):
            return "protocol not comparable: the run did not record its templates (runs from before they were recorded)"
        ours = json.loads(r["templates"])
        return "" if ours == [pub["template"]] else (
            f"protocol differs: {len(ours)} template(s), the CLIP baseline is the one template {pub['template']!r}")
    need = {"aggregate": ("cp_aggregate", pub["aggregate"]), "combine": ("cp_combine", "replace"),
            "descriptor pattern": ("cp_descriptor_pattern", pub["descriptor_pattern"])}
    if kind == "descriptions":
        need |= {"descriptions mode": ("cp_descriptions_mode", "descriptors"),
                 "descriptor file (sha256)": ("cp_descriptions_sha256", pub["descriptors_sha256"])}
    else:  # waffle
        need |= {"waffle pairs": ("cp_waffle", int(pub["waffle_count"])), "descriptions beside": ("cp_waffle_with_descriptions", False)}
    unrecorded = [name for name, (col, _) in need.items() if _missing(r.get(col))]
    if unrecorded:
        return f"protocol not comparable: the run did not record its {', '.join(unrecorded)}"
    differ = [f"{name} {r[col]!r}, theirs {want!r}" for name, (col, want) in need.items() if r[col] != want]
    return "" if not differ else "protocol differs: " + "; ".join(differ)


def _note(r: dict, pub: pd.Series) -> str:
    """What stays different where the protocol matches (said, not hidden)."""
    notes = []
    if r["cp_kind"] == "waffle":
        # an eval's waffle set stands alone (with descriptions, eval uses them), so its characters are the fallback's
        notes.append("random words from CLIP's BPE vocabulary, not their word_list.pkl; numpy draws, not theirs; "
                     "random characters from zeroshot's fallback alphabet, theirs from the DCLIP descriptors")
    if int(pub["n_seeds"]) > 1:
        seed = r.get("cp_seed")
        notes.append(f"ours one seed ({'?' if _missing(seed) else int(seed)}), theirs the mean of {int(pub['n_seeds'])}")
    return "; ".join(notes)


def waffleclip_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per report row of a release and dataset WaffleCLIP published (a matched method, or why none)."""
    if table is None or table.empty or "cp_kind" not in table:
        return pd.DataFrame(columns=COLUMNS)
    ref = published_waffleclip()
    published_pairs = set(zip(ref.release, ref.dataset))
    out = []
    for r in table.to_dict("records"):
        if (r.get("model_release"), r["dataset"]) not in published_pairs:
            continue
        here = ref[(ref.release == r["model_release"]) & (ref.dataset == r["dataset"])]
        base = {"model": r["model"], "model_release": r["model_release"], "dataset": r["dataset"],
                "dataset_label": r["dataset_label"], "prompts_label": r["prompts_label"], "protocol": _protocol(r),
                "seed": None if _missing(r.get("cp_seed")) else int(r["cp_seed"]), "top1": 100 * r["top1"],
                "published_method": "", "published_mean": None, "published_std": None, "published_seeds": None,
                "delta": None, "note": ""}
        kind = r.get("cp_kind")
        mode = MODE_FOR_KIND.get(kind)
        if _missing(kind):
            out.append({**base, "status": "protocol not comparable: the run recorded no class_prompts (runs from "
                                          "before they were recorded)"})
            continue
        if mode is None or (kind == "waffle" and r.get("cp_waffle_with_descriptions")):
            what = "controls" if kind == "control" else "waffle beside the descriptions" if kind == "waffle" else kind
            out.append({**base, "status": f"protocol not comparable: {what} matches no published method "
                                          "(their controls and waffle_and_gpt draw their sets differently)"})
            continue
        candidates = here[here["mode"] == mode]
        checks = [(pub, _check(r, pub)) for _, pub in candidates.iterrows()]
        matched = [pub for pub, why in checks if not why]
        if not matched:
            why = "; ".join(dict.fromkeys(w for _, w in checks)) or f"WaffleCLIP published no {mode} row here"
            out.append({**base, "status": why})
            continue
        for pub in matched:
            row = {**base, "published_method": f"{pub['method']} ({pub['mode']})", "published_seeds": int(pub['n_seeds']),
                   "note": _note(r, pub)}
            if not r.get("comparable"):
                row["status"] = f"run not comparable: {r.get('not_comparable_reason') or 'not the canonical split and images'}"
            elif r.get("n_images") != int(pub["n_images"]):
                row["status"] = f"images differ: ours {r.get('n_images')}, theirs {int(pub['n_images'])} ({pub['split']})"
            else:
                row.update(status="compared", published_mean=float(pub["top1_mean"]), published_std=float(pub["top1_std"]),
                           delta=100 * r["top1"] - float(pub["top1_mean"]))
            out.append(row)
    frame = pd.DataFrame(out, columns=COLUMNS)
    return frame.astype({"seed": "Int64", "published_seeds": "Int64"})


def markdown(frame: pd.DataFrame) -> list[str]:
    if frame is None or frame.empty:
        return []
    lines = ["## WaffleCLIP's published results", "",
             f"Top-1 in %. Published: {SOURCE}, mean ± std (population) over their seeds, run with OpenAI's `clip` "
             "package and their descriptor files' class names. A run stands beside a published method only where its "
             "recorded class-prompt protocol is that method's (templates: their one template; descriptions: DCLIP's "
             "file, descriptors, their pattern, score_mean; waffle N: N pairs, their pattern, score_mean); delta = ours "
             "− their mean.", "",
             "| dataset | model | prompts | protocol | top-1 | published | method | delta | status | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.to_dict("records"):
        pub = "" if _missing(r["published_mean"]) else (
            f"{r['published_mean']:.2f} ± {r['published_std']:.2f} (n={r['published_seeds']})")
        cells = [r["dataset_label"], r["model"], r["prompts_label"], r["protocol"], fmt(r["top1"]), pub,
                 r["published_method"], fmt(r["delta"], signed=True), r["status"], r["note"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return lines + [""]
