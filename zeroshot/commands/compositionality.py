"""`zeroshot compositionality dataset=sugar_crepe|winoground|aro_*|caption_selection`: image-caption selection.

Per instance the model scores its images against its candidate captions (cosine similarity); the scores the
benchmarks define follow (metrics/compositionality.py): SugarCrepe's text accuracy per subset and the paper's
replace/swap/add means, Winoground's text, image and group scores, ARO's macro accuracy over relations or
attribute pairs and its order sets' accuracy. The image side is classification's: the same checks, model loading,
feature cache and torchrun sharding over the unique images (a COCO image shared by SugarCrepe's subsets is
encoded once); the unique captions go through `encode_prompts` and the text cache, split across ranks. Only rank
0 scores and writes the run directory, whose metrics.json records everything a classification run does, with the
instances (hashed) in place of prompts.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from zeroshot import distributed as dist
from zeroshot import suite
from zeroshot.classifier import encode_prompts
from zeroshot.data.compositionality import Instance, build_selection_dataset
from zeroshot.figures import drawing
from zeroshot.metrics import compositionality as cm
from zeroshot.paths import REFERENCE
from zeroshot.pipeline import Setup, cache_root, caption_tokenizer, image_features, load_for, runtime, text_cache
from zeroshot.prompts.sets import PromptSet
from zeroshot.record import run_dir_base, run_directory, run_record
from zeroshot.runs import RunRecord

TIE_RULES = {
    "strict": "a tie between the right and a wrong candidate counts as wrong (the right one must score strictly higher)",
    "first": "the first highest-scoring candidate is chosen (argmax): the right one wins a tie with any candidate after it",
}


@dataclass
class SelectionSetup(Setup):
    instances: list[Instance] = field(default_factory=list)


def prepare(cfg: DictConfig) -> SelectionSetup:
    """The pipeline's checks and loading (pipeline.runtime, load_for), for a set of images and candidate captions."""
    device, precision = runtime(cfg)
    dataset, instances = dist.local_rank_zero_first(lambda: build_selection_dataset(cfg.dataset, cfg.skip_bad_images))
    model = load_for(cfg, dataset, device, precision)
    pset = PromptSet("captions", [], [], f"the candidate captions of {cfg.dataset.name}")
    return SelectionSetup(model, dataset, pset, [], device, precision, cache_root(cfg), instances=instances)


def instances_hash(s: SelectionSetup) -> str:
    """sha256 of every instance: its key, images (path relative to the dataset's root, and crop), candidate captions
    and right answers, in order. A copy of the set elsewhere has the same hash."""
    import os

    root = str(s.dataset.root)
    paths = [os.path.relpath(p, root) for p in s.dataset.paths]
    rows = [[i.key, [[paths[j], s.dataset.source.box(j)] for j in i.images], i.captions, i.answers] for i in s.instances]
    return hashlib.sha256(json.dumps({"instances": rows}).encode()).hexdigest()


def encode_captions(cfg: DictConfig, s: SelectionSetup, progress: bool) -> tuple[torch.Tensor, dict[str, int]]:
    """[T, D] features of every unique caption (across ranks, through the text cache), and caption -> row."""
    unique = list(dict.fromkeys(c for i in s.instances for c in i.captions))
    tok = caption_tokenizer(s.model)
    cache = text_cache(s)
    feats = dist.build_classifier_sharded(
        lambda part: encode_prompts(s.model, part, cfg.text_batch_size, progress, cache, tokenize=tok).t(), unique)
    return feats.t().contiguous(), {c: r for r, c in enumerate(unique)}


def macro_exclusions(d: DictConfig) -> list[str]:
    """The groups a macro accuracy leaves out (zeroshot/reference/<macro_exclude>.json: ARO's symmetric relations)."""
    if not d.macro_exclude:
        return []
    return list(json.loads((REFERENCE / f"{d.macro_exclude}.json").read_text())["relations"])


def summarize(d: DictConfig, out: cm.Outcomes, groups: list[str]) -> dict:
    """The dataset's scores: overall accuracies, per group, SugarCrepe's group means, ARO's macro accuracy."""
    multi = not np.isnan(out.image).all()
    m = {"text_accuracy": float(out.text.mean())}
    if multi:
        m.update(image_accuracy=float(np.nanmean(out.image)), group_accuracy=float(out.group.mean()))
    if d.kind == "winoground":  # the paper's names for the same three numbers
        m.update(text_score=m["text_accuracy"], image_score=m["image_accuracy"], group_score=m["group_accuracy"])
    if not d.group_by:
        return m
    exclude = macro_exclusions(d)
    counted = cm.group_accuracies(out.text, groups, int(d.macro_min_count), exclude)
    per = {}
    for g, (acc, n) in cm.group_accuracies(out.text, groups).items():
        per[g] = {"text_accuracy": acc, "count": n, "in_macro": g in counted}
        if multi:
            mask = np.asarray(groups, dtype=object) == g
            scored = out.image[mask][~np.isnan(out.image[mask])]  # a group of one-image instances has no image score
            per[g].update(image_accuracy=float(scored.mean()) if len(scored) else None,
                          group_accuracy=float(out.group[mask].mean()))
    m["per_group"] = per
    if d.group_means:  # SugarCrepe: each subset's accuracy, and the unweighted mean of the subsets of each kind
        m["subsets"] = {g: v["text_accuracy"] for g, v in per.items()}
        m["group_means"] = {name: cm.macro({s: counted[s] for s in subsets if s in counted})
                            for name, subsets in d.group_means.items()}
        m["text_accuracy_mean_of_subsets"] = cm.macro(counted)
    if d.metric == "macro_accuracy":
        m.update(macro_accuracy=cm.macro(counted), macro_groups=len(counted), macro_min_count=int(d.macro_min_count),
                 macro_excluded=sorted(set(per) - set(counted)))
    return m


def kept_instances(s: SelectionSetup, positions: list[int], text_rows: dict[str, int]):
    """Instances whose every image was read, as (feature rows, caption rows, answers); and how many were dropped."""
    row = {p: r for r, p in enumerate(positions)}
    kept, scored = [], []
    for i in s.instances:
        if all(j in row for j in i.images):
            kept.append(i)
            scored.append(([row[j] for j in i.images], [text_rows[c] for c in i.captions], i.answers))
    return kept, scored


def run_compositionality(cfg: DictConfig) -> dict:
    """Run one image-caption selection evaluation and write its results directory; returns the metrics dict."""
    start = time.perf_counter()
    s = prepare(cfg)
    progress = cfg.progress and dist.is_main()
    text_feats, text_rows = encode_captions(cfg, s, progress)
    feats = image_features(cfg, s, progress)
    ihash = instances_hash(s)
    positions = feats.indices.tolist() if feats is not None else []
    kept, scored = kept_instances(s, positions, text_rows)
    identity = None
    if dist.is_main():
        identity = run_record(cfg, s, len(kept), feats.skipped)
        identity.update(prompts="captions", prompts_hash=ihash, prompts_label=f"captions#{ihash[:8]}")
    with run_directory(run_dir_base(cfg, s, identity) if identity else None) as run:
        if not run.main:
            return {"run_dir": str(run.path)}
        d = cfg.dataset
        # an instance one of whose images could not be read (skip_bad_images=true) cannot be scored: it leaves, counted
        out = cm.outcomes(feats.features, text_feats, scored, d.ties)
        scores = summarize(d, out, [i.group for i in kept])
        run.record = RunRecord("compositionality", {
            **scores, "metric": d.metric, "main_metric": scores[d.metric], "ties": d.ties, "ties_rule": TIE_RULES[d.ties]},
            identity, {
            "instances_hash": ihash, "n_instances": len(kept), "instances_dropped": len(s.instances) - len(kept),
            "n_images": len(positions), "n_captions": len(text_rows), "skipped_images": feats.skipped,
            "images_from_cache": feats.from_cache, "image_encode_seconds": feats.compute_s,
            "data_wait_seconds": feats.data_wait_s, **feats.step.metrics(),
            "wall_seconds": time.perf_counter() - start, "timestamp": run.path.name})
        write_outputs(run.path, cfg, s, kept, out, run.record)
    metrics = {**run.record.to_json(), "run_dir": str(run.path)}
    print(summary_line(metrics))
    return metrics


def summary_line(m: dict) -> str:
    parts = [f"{k} {100 * m[k]:.2f}%" for k in ("text_accuracy", "image_accuracy", "group_accuracy") if k in m]
    parts += [f"{name} {100 * v:.2f}%" for name, v in (m.get("group_means") or {}).items()]
    return (f"{m['dataset_label']} | {m['model']} ({m['architecture']}, sha256 {m['checkpoint_sha256'][:12]}) | "
            f"{m['n_instances']} instances, {m['n_images']} images | {' '.join(parts)} | {m['metric']} "
            f"{100 * m['main_metric']:.2f}% | {m['wall_seconds']:.1f}s -> {m['run_dir']}")


def write_outputs(run_dir: Path, cfg, s: SelectionSetup, kept: list[Instance], out: cm.Outcomes, metrics) -> None:
    """Per instance its candidates, scores and outcomes (instances.csv, outcomes.npz for `compare`), the figure and
    the config (metrics.json is run_directory's, last)."""
    import pandas as pd

    from zeroshot.figures.run import plot_caption_selection

    paths = s.dataset.paths
    keys = np.array([i.key for i in kept], dtype=object)
    pd.DataFrame({
        "key": keys, "group": [i.group for i in kept], "images": [json.dumps([paths[j] for j in i.images]) for i in kept],
        "captions": [json.dumps(i.captions, ensure_ascii=False) for i in kept], "answers": [json.dumps(i.answers) for i in kept],
        "scores": [json.dumps(np.round(sc, 6).tolist()) for sc in out.scores],
        "text_correct": out.text, "image_correct": out.image, "group_correct": out.group,
    }).to_csv(run_dir / "instances.csv", index=False)
    np.savez_compressed(run_dir / "outcomes.npz", keys=keys.astype(str), text=out.text, image=out.image, group=out.group)
    per = metrics.get("per_group") or {}
    if per and cfg.figures:
        names = list(per)[:200]
        series = {k.split("_")[0]: [per[g][k] for g in names] for k in ("text_accuracy", "image_accuracy", "group_accuracy")
                  if k in per[names[0]]}
        drawing.draw(plot_caption_selection, names, series, run_dir / "per_group.png",
                     f"{metrics['dataset_label']}: {metrics['model']}")
        drawing.finish()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "prompts"]),
                                                           resolve=True))


def compositionality_pair(cfg: DictConfig) -> dict:
    """A suite's compositionality job (`zeroshot suite-compositionality`): a failure is recorded, not raised."""
    return suite.job(run_compositionality, cfg)
