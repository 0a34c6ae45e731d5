"""Prompt-engineering experiments on cached image features: `zeroshot prompts ...` (configs/prompts.yaml).

Image features come from the feature cache (computed once per model x dataset), so each experiment costs
only text encoding (itself cached per prompt string) plus matrix products. Every accuracy gets a bootstrap
95% CI, and every set a paired bootstrap p-value against the baseline "a photo of a {}.". `run_prompts` reads
like `evaluate`: one function per table, each filling its results, then one function writes the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from zeroshot import trackers
from zeroshot.classifier import logits as score
from zeroshot.classifier import probabilities_from_logits as probabilities
from zeroshot.errors import PromptError
from zeroshot.experiments.rows import Scoring
from zeroshot.experiments.templates import ensemble, greedy_selection, template_features
from zeroshot.figures import drawing
from zeroshot.figures.prompts import plot_selection, plot_templates
from zeroshot.label_free_run import experiment_runs, write_label_free
from zeroshot.log import log, plural
from zeroshot.metrics.stats import held_out_split, holm, share
from zeroshot.pipeline import image_features, prepare, text_cache
from zeroshot.prompts.sets import PromptSet, read_classnames, write_prompt_file
from zeroshot.record import run_dir_base, run_directory, run_record, write_json


@dataclass(frozen=True)
class Bench:
    """What every table is measured on: normalized image features [N, D] and labels, each template's class
    features [T, C, D], the baseline's logits, and the seeded split greedy selection picks on (`sel`) and is
    measured on (`held`), with the images of each to score rows on."""

    model: object
    image: torch.Tensor
    labels: torch.Tensor
    templates: list[str]
    tfeats: torch.Tensor
    baseline: str  # the template every row is tested against
    baseline_logits: torch.Tensor
    sel: torch.Tensor
    held: torch.Tensor
    every: Scoring  # all images
    on_held: Scoring
    on_sel: Scoring

    def scores(self, class_feats: torch.Tensor) -> torch.Tensor:
        """[C, D] -> [N, C], with the model's scale and bias."""
        return score(self.model, self.image, class_feats.t())


@dataclass
class TemplateTable:
    rows: list[dict]  # (a) each template alone, with (c) its leave-one-out change and Holm-adjusted p-value
    ensemble: dict  # (b) OpenAI's ensemble of them all
    ensemble_logits: torch.Tensor  # [N, C]
    mean_probabilities: torch.Tensor  # [N, C], for (e)


@dataclass
class SelectionTable:
    chosen: list[str]  # the templates greedy selection chose, in order
    curve: list[dict]  # top-1 on the selection and held-out images after each step
    selected: dict  # the headline: on the held-out images only
    on_selection: dict  # on the images it picked on (optimistic)
    heldout: list[dict]  # the ensemble and the baseline on the same held-out images


@dataclass
class PromptResults:
    """Every table of one run, as `write_run` writes them."""

    templates: TemplateTable
    selection: SelectionTable
    methods: list[dict]  # (e) ensembling methods
    label_free: list  # (g) LabelFreeRun per label-free classifier
    label_free_rows: list[dict]
    variants: list[dict]  # (f) class-name variants
    baseline: dict
    descriptions: dict | None  # class-specific prompts (run_description_experiments' tables), if the set has them


def run_prompts(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    trackers.check(cfg)
    s = prepare(cfg)
    if len(s.prompts.templates) == 1:  # nothing to ensemble, select or leave out: say so rather than print empty tables
        log.info(f"note: the pool has a single template ({s.prompts.templates[0]!r}), so ensembling, leave-one-out "
                 "and greedy selection are degenerate. Give a pool, e.g. prompts=imagenet, prompts=cifar10 or "
                 "prompts.templates='[...]'.")
    tcache = text_cache(s)
    feats_img = image_features(cfg, s, cfg.progress)
    b = bench(cfg, s, F.normalize(feats_img.features, dim=-1), feats_img.labels, tcache)
    templates = template_table(b)
    free = experiment_runs(cfg, s, b.image, b.tfeats)  # (g) label-free classifiers: ZPE, CARPRT, CHiLS
    results = PromptResults(
        templates=templates,
        selection=selection_table(b, templates.ensemble_logits, cfg.max_selected),
        methods=methods_table(b, templates),
        label_free=free,
        label_free_rows=label_free_table(b, free),
        variants=classname_table(cfg, s, b, templates.ensemble_logits, tcache),
        baseline=b.every.row(f"baseline: {cfg.baseline}", b.baseline_logits, "baseline"),
        descriptions=describe(cfg, s, b, tcache),
    )
    record = run_record(cfg, s, len(b.labels), feats_img.skipped)
    summary = write_run(cfg, s, record, results, run_summary(cfg, s, record, results, feats_img)
                        | {"wall_seconds": time.perf_counter() - start})
    print_line(record, results, summary)
    trackers.log_run(cfg, Path(summary["run_dir"]), "summary.json")  # the run is complete: a tracker that fails now only warns
    return summary


def bench(cfg: DictConfig, s, image: torch.Tensor, labels: torch.Tensor, tcache) -> Bench:
    """(d) greedy forward selection picks on one seeded part of the images; its headline numbers (top-1, CI,
    p-value) are measured on the held-out rest only, since the part it picked on flatters it."""
    tfeats = template_features(s.model, s.classnames, s.prompts.templates, cfg, tcache)  # [T, C, D]
    n = len(labels)
    sel, held = (torch.from_numpy(part) for part in held_out_split(n, share(n, cfg.select_fraction), int(cfg.seed)))
    if len(held) == 0:
        raise PromptError(f"select_fraction={cfg.select_fraction} leaves no held-out images to measure the selection on; "
                          "use a value below 1 (e.g. 0.5)")
    baseline_logits = score(s.model, image, ensemble(template_features(s.model, s.classnames, [cfg.baseline], cfg, tcache)).t())
    every = Scoring(labels, baseline_logits.argmax(1).eq(labels).numpy(), int(cfg.bootstrap), int(cfg.seed))
    return Bench(s.model, image, labels, list(s.prompts.templates), tfeats, cfg.baseline, baseline_logits, sel, held,
                 every, every.take(held), every.take(sel))


def template_table(b: Bench) -> TemplateTable:
    """(a) each template alone, (b) the full ensemble, (c) leave-one-out; Holm over the many templates tested."""
    full_logits = b.scores(ensemble(b.tfeats))  # [N, C]
    full = b.every.row("ensemble", full_logits, "ensemble")
    prob_sum = torch.zeros_like(full_logits)  # for (e); one [N, C] buffer, not [T, N, C] (ImageNet: 16 GB)
    measured = []
    for t, template in enumerate(b.templates):
        logits_t = b.scores(b.tfeats[t])  # [N, C]
        prob_sum += probabilities(b.model, logits_t)
        measured.append(b.every.measure(template, logits_t, "template"))
    rows = b.every.rows(measured)
    if len(b.templates) > 1:
        n = len(b.labels)
        for t, r in enumerate(rows):
            keep = [i for i in range(len(b.templates)) if i != t]
            # counted in images, so that no change is exactly 0 (not a float32-vs-float64 residue like 4.97e-10)
            hits = int((b.image @ ensemble(b.tfeats[keep]).t()).argmax(1).eq(b.labels).sum().item())
            r["loo_top1"], r["loo_delta"] = hits / n, (hits - round(full["top1"] * n)) / n  # < 0: removing it hurts
    for r, adjusted in zip(rows, holm([r["p_vs_baseline"] for r in rows])):
        r["p_vs_baseline_holm"] = adjusted
    return TemplateTable(rows, full, full_logits, prob_sum / len(b.templates))


def selection_table(b: Bench, full_logits: torch.Tensor, max_selected: int | None) -> SelectionTable:
    """(d) greedy forward selection on the `sel` images, measured on the `held` rest."""
    chosen = greedy_selection(b.image[b.sel], b.labels[b.sel], b.tfeats, max_selected)
    curve = []
    for k in range(1, len(chosen) + 1):
        pred = (b.image @ ensemble(b.tfeats[chosen[:k]]).t()).argmax(1)
        curve.append({
            "step": k, "template": b.templates[chosen[k - 1]],
            "select_top1": pred[b.sel].eq(b.labels[b.sel]).float().mean().item(),
            "heldout_top1": pred[b.held].eq(b.labels[b.held]).float().mean().item(),
        })
    selected_logits = b.scores(ensemble(b.tfeats[chosen]))
    selected, *heldout = b.on_held.rows([
        b.on_held.measure("greedy selection (held-out images)", selected_logits[b.held], "selected"),
        # the ensemble and the baseline on the same held-out images, for a like-for-like comparison
        b.on_held.measure("ensemble (held-out images)", full_logits[b.held], "ensemble_heldout"),
        b.on_held.measure(f"baseline (held-out images): {b.baseline}", b.baseline_logits[b.held],
                          "baseline_heldout")])
    on_selection = b.on_sel.row("greedy selection (selection images; optimistic)", selected_logits[b.sel],
                                "selected_on_selection")
    return SelectionTable([b.templates[i] for i in chosen], curve, selected, on_selection, heldout)


def methods_table(b: Bench, t: TemplateTable) -> list[dict]:
    """(e) ensembling methods side by side; logits are linear in the text features, so their mean over
    templates is the logits of the (unrenormalized) mean feature."""
    return b.every.rows([
        b.every.measure("mean of normalized text embeddings", t.ensemble_logits, "method"),
        b.every.measure("mean of per-template logits", b.scores(b.tfeats.mean(dim=0)), "method"),
        b.every.measure("mean of per-template probabilities", t.mean_probabilities, "method"),
    ])


def label_free_table(b: Bench, free: list) -> list[dict]:
    """(g) label-free: ZPE's and CARPRT's weights and CHiLS's subclasses, from the images' scores alone (no label),
    so they are measured on every image; on the held-out images too, beside the greedy selection."""
    every = b.every.rows([b.every.measure(r.label, r.logits, "label_free") for r in free])
    held = b.on_held.rows([b.on_held.measure(f"{r.label} (held-out images)", r.logits[b.held], "label_free_heldout")
                           for r in free])
    return [row | {"digest": r.identity["digest"]} for row, r in zip([*every, *held], [*free, *free])]


def classname_table(cfg: DictConfig, s, b: Bench, full_logits: torch.Tensor, tcache) -> list[dict]:
    """(f) class-name variants (classnames_variants files) with the same templates."""
    measured = [b.every.measure(f"classnames: {s.prompts.name}", full_logits, "classnames")]
    for path in cfg.classnames_variants or []:
        names = read_classnames(path)
        if len(names) != len(s.classnames):
            raise PromptError(f"Class-names file {path} has {len(names)} names; dataset {cfg.dataset.name!r} has {len(s.classnames)} classes")
        w = ensemble(template_features(s.model, names, b.templates, cfg, tcache))
        measured.append(b.every.measure(f"classnames: {Path(path).name}", b.scores(w), "classnames"))
    return b.every.rows(measured)


def describe(cfg: DictConfig, s, b: Bench, tcache) -> dict | None:
    """Class-specific prompts (descriptions, WaffleCLIP's random descriptors, the controls) against the template
    ensemble on the same cached features, both aggregations; None when the prompt set has none."""
    sets = s.class_prompts or {}
    if not sets.get("descriptions") and not sets.get("random"):
        return None
    from zeroshot.classifier import AGGREGATES
    from zeroshot.experiments.descriptions import run_description_experiments

    d = sets["descriptions"]
    first = (s.main_class_prompts or d).aggregate
    return run_description_experiments(
        s.model, b.image, b.labels, s.classnames, b.templates, {d.label: d.prompts} if d else {},
        random_sets={label: {seed: x.prompts for seed, x in by_seed.items()} for label, by_seed in sets["random"].items()},
        aggregate=[first, *(a for a in AGGREGATES if a != first)], bootstrap=int(cfg.bootstrap), seed=int(cfg.seed),
        select_fraction=float(cfg.select_fraction), batch_size=cfg.text_batch_size, text_cache=tcache,
        progress=cfg.progress) | {"mapping": sets.get("mapping")}


def run_summary(cfg: DictConfig, s, record: dict, r: PromptResults, feats_img) -> dict:
    """summary.json's content: the run record and every table's headline rows."""
    n, sel = len(feats_img.labels), r.selection
    summary = {
        **record, "n_images": n, "n_classes": len(s.classnames), "n_templates": len(s.prompts.templates),
        "degenerate_pool": len(s.prompts.templates) == 1,
        "images_encoded": n - feats_img.from_cache, "images_from_cache": feats_img.from_cache,
        "ensemble": r.templates.ensemble, "baseline": r.baseline, "selected": sel.selected,
        "selected_on_selection_images": sel.on_selection, "heldout_comparison": sel.heldout,
        "selected_templates": sel.chosen, "selection_images": int(sel.on_selection["n_images"]),
        "heldout_images": int(sel.selected["n_images"]), "methods": r.methods, "label_free": r.label_free_rows,
        "classname_variants": r.variants, "bootstrap": int(cfg.bootstrap), "seed": int(cfg.seed),
        "select_fraction": float(cfg.select_fraction),
    }
    return summary


def write_run(cfg: DictConfig, s, record: dict, r: PromptResults, summary: dict) -> dict:
    """Every file of the run in one fresh directory, summary.json last (the mark of a complete run); returns the
    summary as written. Any failure part-way removes the directory (run_directory): a half-written run must not
    look like a result."""
    with run_directory(run_dir_base(cfg, s, record), record=False) as run:
        summary = summary | {"run_dir": str(run.path)}
        if r.descriptions is not None:
            summary["descriptions"] = {k: r.descriptions[k] for k in ("rows", "random_summary", "heldout", "mapping")}
        title = f"{record['dataset_label']} | {record['model']}"
        write_tables(run.path, cfg, s, record, r)
        if r.label_free:
            write_label_free(run.path, r.label_free, s.prompts.templates, bool(cfg.figures), title)
        if r.descriptions is not None:
            from zeroshot.experiments.descriptions import write_description_outputs

            write_description_outputs(run.path, r.descriptions, title, bool(cfg.figures))
        drawing.finish()  # the figures, before the file that marks the run complete
        write_json(run.path / "summary.json", summary)
    return summary


def write_tables(run_dir: Path, cfg: DictConfig, s, record: dict, r: PromptResults) -> None:
    """templates.csv/.png, selection.csv/.png, sets.csv, config.yaml and best_prompts.json."""
    table = pd.DataFrame(r.templates.rows).sort_values("top1", ascending=False)
    curve, sel = r.selection.curve, r.selection
    if cfg.figures:  # first: they are drawn in the helper process while the tables are written here
        title = f"{record['dataset_label']} | {record['model']}"

        def numbers(values) -> list[float]:  # plain floats: no tensor may reach the helper process
            return [float(v) for v in values]

        full = r.templates.ensemble
        drawing.draw(plot_templates, list(table.name), numbers(table.top1),
                     (numbers(table.top1_ci_low), numbers(table.top1_ci_high)),
                     numbers([full["top1"], full["top1_ci_low"], full["top1_ci_high"]]), run_dir / "templates.png", title)
        drawing.draw(plot_selection, [int(c["step"]) for c in curve],
                     numbers(c["select_top1"] for c in curve), numbers(c["heldout_top1"] for c in curve),
                     float(sel.heldout[0]["top1"]), run_dir / "selection.png", title)
    table.to_csv(run_dir / "templates.csv", index=False)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # what PromptLab.from_run reads
    pd.DataFrame(curve).to_csv(run_dir / "selection.csv", index=False)
    pd.DataFrame([r.templates.ensemble, sel.selected, sel.on_selection, *sel.heldout, r.baseline, *r.methods,
                  *r.label_free_rows, *r.variants]).to_csv(run_dir / "sets.csv", index=False)
    write_prompt_file(run_dir / "best_prompts.json", PromptSet(
        f"{s.prompts.name}_greedy", sel.chosen, s.classnames,
        f"greedy selection on {record['dataset_label']} ({cfg.dataset.split} split) with {record['model']} "
        f"({run_dir}); evaluating it on the images it was selected on is optimistic"))


def print_line(record: dict, r: PromptResults, summary: dict) -> None:
    """The run in one line: the ensemble, the best template, the greedy selection, label-free and descriptions."""
    full, best = r.templates.ensemble, max(r.templates.rows, key=lambda row: row["top1"])
    free_line = "".join(f"{run.short} {100 * row['top1']:.2f}% | " for run, row in zip(r.label_free, r.label_free_rows))
    print(
        f"{record['dataset_label']} | {record['model']} | {plural(summary['n_templates'], 'template')} | ensemble top1 "
        f"{100 * full['top1']:.2f}% [{100 * full['top1_ci_low']:.1f}, {100 * full['top1_ci_high']:.1f}] | best single "
        f"{100 * best['top1']:.2f}% | greedy {plural(len(r.selection.chosen), 'template')} "
        f"{100 * r.selection.selected['top1']:.2f}% on {summary['heldout_images']} held-out images | {free_line}"
        f"{described_line(r.descriptions)}images encoded {summary['images_encoded']} -> {summary['run_dir']}"
    )


def described_line(described: dict | None) -> str:
    """The summary line's part for class-specific prompts: each description set and seed mean, in top-1."""
    if not described:
        return ""
    rows = [r for r in [*described["rows"], *described.get("random_summary", [])] if r["kind"] in ("descriptions", "random_mean")]
    return " | ".join(f"{r['name']} {100 * r['top1']:.2f}%" for r in rows) + " (descriptions.csv) | "
