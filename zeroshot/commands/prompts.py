"""Prompt-engineering experiments on cached image features: `python -m zeroshot prompts ...`.

Image features come from the feature cache (computed once per model x dataset), so each experiment costs
only text encoding (itself cached per prompt string) plus matrix products. Every accuracy gets a bootstrap
95% CI, and every set a paired bootstrap p-value against the baseline "a photo of a {}.".
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from zeroshot import drawing, trackers
from zeroshot.classifier import logits as score
from zeroshot.classifier import probabilities_from_logits as probabilities
from zeroshot.errors import PromptError
from zeroshot.experiments.figures import plot_selection, plot_templates
from zeroshot.experiments.templates import ensemble, greedy_selection, template_features
from zeroshot.label_free_run import experiment_runs, write_label_free
from zeroshot.log import log, plural
from zeroshot.metrics.classification import (
    bootstrap_ci,
    bootstrap_indices,
    classification_metrics,
    holm,
    paired_bootstrap_pvalue,
)
from zeroshot.pipeline import image_features, prepare, text_cache
from zeroshot.prompts.sets import PromptSet, read_classnames, write_prompt_file
from zeroshot.record import make_run_dir, run_dir_base, run_record, write_json


def run_experiments(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    trackers.check(cfg)
    s = prepare(cfg)
    pset: PromptSet = s.prompts
    templates = pset.templates
    if len(templates) == 1:  # nothing to ensemble, select or leave out: say so rather than print empty tables
        log.info(f"note: the pool has a single template ({templates[0]!r}), so ensembling, leave-one-out "
              "and greedy selection are degenerate. Give a pool, e.g. prompts=imagenet, prompts=cifar10 or "
              "prompts.templates='[...]'.")
    tcache = text_cache(s)
    feats_img = image_features(cfg, s, cfg.progress)
    image = F.normalize(feats_img.features, dim=-1)  # [N, D]
    labels = feats_img.labels
    n = len(labels)
    tfeats = template_features(s.model, s.classnames, templates, cfg, tcache)  # [T, C, D]

    def scores(class_feats: torch.Tensor) -> torch.Tensor:  # [C, D] -> [N, C], with the model's scale and bias
        return score(s.model, image, class_feats.t())

    # (d) greedy forward selection picks on one seeded part of the images; its headline numbers (top-1, CI,
    # p-value) are measured on the held-out rest only, since the part it picked on flatters it
    perm = torch.from_numpy(np.random.default_rng(int(cfg.seed)).permutation(n))
    half = int(round(n * float(cfg.select_fraction)))
    sel, held = perm[:half].sort().values, perm[half:].sort().values
    if len(held) == 0:
        raise PromptError(f"select_fraction={cfg.select_fraction} leaves no held-out images to measure the selection on; "
                          "use a value below 1 (e.g. 0.5)")
    idx_all = bootstrap_indices(n, int(cfg.bootstrap), int(cfg.seed))
    idx_held = bootstrap_indices(len(held), int(cfg.bootstrap), int(cfg.seed))

    baseline_t = cfg.baseline
    baseline_logits = scores(ensemble(template_features(s.model, s.classnames, [baseline_t], cfg, tcache)))
    correct_base = baseline_logits.argmax(1).eq(labels).numpy()

    def row(name: str, logits: torch.Tensor, kind: str, subset: torch.Tensor | None = None) -> dict:
        """Metrics, bootstrap CI and paired p-value vs the baseline, on all images or on `subset` of them."""
        y, base, idx = labels, correct_base, idx_all
        if subset is not None:
            logits, y, base, idx = logits[subset], labels[subset], correct_base[subset.numpy()], idx_held
        m = classification_metrics(logits, y)
        correct = logits.argmax(1).eq(y).numpy()
        low, high = bootstrap_ci(correct, idx)
        return {
            "kind": kind, "name": name, "n_images": int(len(y)), "top1": m["top1"], "top5": m["top5"],
            "mean_per_class_recall": m["mean_per_class_recall"], "top1_ci_low": low, "top1_ci_high": high,
            "p_vs_baseline": paired_bootstrap_pvalue(correct, base, idx),
        }

    # (a) each template alone, (b) the full ensemble, (c) leave-one-out
    full_logits = scores(ensemble(tfeats))  # [N, C]
    full = row("ensemble", full_logits, "ensemble")
    rows = []
    prob_sum = torch.zeros_like(full_logits)  # for (e); one [N, C] buffer, not [T, N, C] (ImageNet: 16 GB)
    for t, template in enumerate(templates):
        logits_t = scores(tfeats[t])  # [N, C]
        prob_sum += probabilities(s.model, logits_t)
        r = row(template, logits_t, "template")
        if len(templates) > 1:
            keep = [i for i in range(len(templates)) if i != t]
            # counted in images, so that no change is exactly 0 (not a float32-vs-float64 residue like 4.97e-10)
            n, hits = len(labels), int((image @ ensemble(tfeats[keep]).t()).argmax(1).eq(labels).sum().item())
            r["loo_top1"], r["loo_delta"] = hits / n, (hits - round(full["top1"] * n)) / n  # < 0: removing it hurts
        rows.append(r)
    # many templates are each tested against the baseline: Holm-adjusted p-values beside the raw ones
    for r, adjusted in zip(rows, holm([r["p_vs_baseline"] for r in rows])):
        r["p_vs_baseline_holm"] = adjusted

    chosen = greedy_selection(image[sel], labels[sel], tfeats, cfg.get("max_selected"))
    curve = []
    for k in range(1, len(chosen) + 1):
        pred = (image @ ensemble(tfeats[chosen[:k]]).t()).argmax(1)
        curve.append({
            "step": k, "template": templates[chosen[k - 1]],
            "select_top1": pred[sel].eq(labels[sel]).float().mean().item(),
            "heldout_top1": pred[held].eq(labels[held]).float().mean().item(),
        })
    selected_logits = scores(ensemble(tfeats[chosen]))
    selected = row("greedy selection (held-out images)", selected_logits, "selected", held)
    selected_on_selection = row("greedy selection (selection images; optimistic)", selected_logits, "selected_on_selection", sel)
    # the ensemble and the baseline on the same held-out images, for a like-for-like comparison
    held_rows = [row("ensemble (held-out images)", full_logits, "ensemble_heldout", held),
                 row(f"baseline (held-out images): {baseline_t}", baseline_logits, "baseline_heldout", held)]

    # (e) ensembling methods side by side; logits are linear in the text features, so their mean over
    # templates is the logits of the (unrenormalized) mean feature
    methods = [
        row("mean of normalized text embeddings", full_logits, "method"),
        row("mean of per-template logits", scores(tfeats.mean(dim=0)), "method"),
        row("mean of per-template probabilities", prob_sum / len(templates), "method"),
    ]

    # (g) label-free: ZPE's and CARPRT's weights and CHiLS's subclasses, from the images' scores alone (no label),
    # so they are measured on every image; on the held-out images too, beside the greedy selection
    free = experiment_runs(cfg, s, image, tfeats)
    free_rows = [row(r.label, r.logits, "label_free") | {"digest": r.identity["digest"]} for r in free]
    free_rows += [row(f"{r.label} (held-out images)", r.logits, "label_free_heldout", held) | {"digest": r.identity["digest"]}
                  for r in free]

    # (f) class-name variants with the same templates
    variants = [row(f"classnames: {pset.name}", full_logits, "classnames")]
    for path in cfg.get("classnames_variants") or []:
        names = read_classnames(path)
        if len(names) != len(s.classnames):
            raise PromptError(f"Class-names file {path} has {len(names)} names; dataset {cfg.dataset.name!r} has {len(s.classnames)} classes")
        w = ensemble(template_features(s.model, names, templates, cfg, tcache))
        variants.append(row(f"classnames: {Path(path).name}", scores(w), "classnames"))

    baseline = row(f"baseline: {baseline_t}", baseline_logits, "baseline")
    record = run_record(cfg, s, n, feats_img.skipped)
    run_dir = make_run_dir(run_dir_base(cfg, s, record))
    write_outputs(run_dir, cfg, s, record, rows, full, curve, [selected, selected_on_selection, *held_rows],
                  [*methods, *free_rows], variants, baseline, [templates[i] for i in chosen])
    if free:
        write_label_free(run_dir, free, templates, bool(cfg.figures), f"{record['dataset_label']} | {record['model']}")
    summary = {
        **record, "n_images": n, "n_classes": len(s.classnames), "n_templates": len(templates),
        "degenerate_pool": len(templates) == 1,
        "images_encoded": n - feats_img.from_cache, "images_from_cache": feats_img.from_cache,
        "ensemble": full, "baseline": baseline, "selected": selected, "selected_on_selection_images": selected_on_selection,
        "heldout_comparison": held_rows, "selected_templates": [templates[i] for i in chosen],
        "selection_images": int(len(sel)), "heldout_images": int(len(held)),
        "methods": methods, "label_free": free_rows, "classname_variants": variants, "bootstrap": int(cfg.bootstrap), "seed": int(cfg.seed),
        "select_fraction": float(cfg.select_fraction), "wall_seconds": time.perf_counter() - start, "run_dir": str(run_dir),
    }
    described = describe_experiments(cfg, s, image, labels, templates, tcache, run_dir, record)
    if described is not None:
        summary["descriptions"] = described
    drawing.finish()  # the figures, before the file that marks the run complete
    write_json(run_dir / "summary.json", summary)
    best = max(rows, key=lambda r: r["top1"])
    free_line = "".join(f"{r.short} {100 * fr['top1']:.2f}% | " for r, fr in zip(free, free_rows))
    print(
        f"{record['dataset_label']} | {record['model']} | {plural(len(templates), 'template')} | ensemble top1 {100 * full['top1']:.2f}% "
        f"[{100 * full['top1_ci_low']:.1f}, {100 * full['top1_ci_high']:.1f}] | best single {100 * best['top1']:.2f}% | "
        f"greedy {plural(len(chosen), 'template')} {100 * selected['top1']:.2f}% on {len(held)} held-out images | "
        f"{free_line}"
        f"{described_line(described)}images encoded {summary['images_encoded']} -> {run_dir}"
    )
    trackers.log_run(cfg, run_dir, "summary.json")  # the run is complete: a tracker that fails now only warns
    return summary


def described_line(described: dict | None) -> str:
    """The summary line's part for class-specific prompts: each description set and seed mean, in top-1."""
    if not described:
        return ""
    rows = [r for r in [*described["rows"], *described.get("random_summary", [])] if r["kind"] in ("descriptions", "random_mean")]
    return " | ".join(f"{r['name']} {100 * r['top1']:.2f}%" for r in rows) + " (descriptions.csv) | "


def describe_experiments(cfg, s, image, labels, templates, tcache, run_dir, record) -> dict | None:
    """Class-specific prompts (descriptions, WaffleCLIP's random descriptors, the controls) against the template
    ensemble on the same cached features, both aggregations, written to their own files (descriptions.csv, ...)."""
    sets = s.class_prompts or {}
    if not sets.get("descriptions") and not sets.get("random"):
        return None
    from zeroshot.classifier import AGGREGATES
    from zeroshot.experiments.descriptions import (
        run_description_experiments,
        write_description_outputs,
    )

    d = sets["descriptions"]
    first = (s.main_class_prompts or d).aggregate
    result = run_description_experiments(
        s.model, image, labels, s.classnames, templates, {d.label: d.prompts} if d else {},
        {label: {seed: x.prompts for seed, x in by_seed.items()} for label, by_seed in sets["random"].items()},
        aggregate=[first, *(a for a in AGGREGATES if a != first)], bootstrap=int(cfg.bootstrap), seed=int(cfg.seed),
        select_fraction=float(cfg.select_fraction), batch_size=cfg.text_batch_size, text_cache=tcache,
        progress=cfg.progress)
    write_description_outputs(run_dir, result, f"{record['dataset_label']} | {record['model']}", bool(cfg.figures))
    return {k: result[k] for k in ("rows", "random_summary", "heldout") if k in result} | {"mapping": sets.get("mapping")}


def write_outputs(run_dir, cfg, s, record, rows, full, curve, selected, methods, variants, baseline, chosen) -> None:
    table = pd.DataFrame(rows).sort_values("top1", ascending=False)
    if cfg.figures:  # first: they are drawn in the helper process while the tables are written here
        title = f"{record['dataset_label']} | {record['model']}"

        def numbers(values) -> list[float]:  # plain floats: no tensor may reach the helper process
            return [float(v) for v in values]

        drawing.draw(plot_templates, run_dir / "templates.png", list(table.name), numbers(table.top1),
                     numbers(table.top1_ci_low), numbers(table.top1_ci_high),
                     numbers([full["top1"], full["top1_ci_low"], full["top1_ci_high"]]), title)
        drawing.draw(plot_selection, run_dir / "selection.png", [int(c["step"]) for c in curve],
                     numbers(c["select_top1"] for c in curve), numbers(c["heldout_top1"] for c in curve),
                     float(selected[2]["top1"]), title)
    table.to_csv(run_dir / "templates.csv", index=False)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # what PromptLab.from_run reads
    pd.DataFrame(curve).to_csv(run_dir / "selection.csv", index=False)
    pd.DataFrame([full, *selected, baseline, *methods, *variants]).to_csv(run_dir / "sets.csv", index=False)
    write_prompt_file(run_dir / "best_prompts.json", PromptSet(
        f"{s.prompts.name}_greedy", chosen, s.classnames,
        f"greedy selection on {record['dataset_label']} ({cfg.dataset.split} split) with {record['model']} "
        f"({run_dir}); evaluating it on the images it was selected on is optimistic"))

