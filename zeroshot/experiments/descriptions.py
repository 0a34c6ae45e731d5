"""Experiments on class-specific prompts for `zeroshot prompts`, on cached image features.

Descriptions, the template ensemble and random descriptors (over seeds) are scored on the same images. Every
set gets a bootstrap 95% CI and a paired bootstrap p-value against the template ensemble, Holm-adjusted over the
sets. Per class: the accuracy change against the templates, and leave-one-text-out within the class (a text
helps when leaving it out lowers top-1). Greedy selection over each class's texts picks on a seeded part of the
images and is measured on the held-out rest, as the template selection is. New files only: descriptions.csv,
per_class_descriptions.csv/.png, description_texts.csv, description_selection.csv.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from zeroshot.classifier import (
    ClassTexts,
    aggregate_features,
    check_aggregate,
    encode_class_prompts,
)
from zeroshot.classifier import logits as score
from zeroshot.experiments.rows import Scoring
from zeroshot.metrics.classification import classification_metrics
from zeroshot.metrics.stats import held_out_split, holm, share

REFERENCE = "templates"  # the row every other set is tested against: the template ensemble


def others_best(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the top two scores and their classes: the best class other than c is top-1 unless that is c."""
    values, indices = logits.topk(min(2, logits.shape[1]), dim=1)
    if logits.shape[1] == 1:
        values, indices = torch.cat([values, torch.full_like(values, -torch.inf)], 1), torch.cat([indices, indices], 1)
    return values[:, 0], indices[:, 0], values[:, 1], indices[:, 1]


def correct_with_column(c: int, column: torch.Tensor, labels: torch.Tensor, best) -> torch.Tensor:
    """[N, K] correctness when class c's scores become each of K candidate columns [N, K], all else fixed.
    Ties go to the lower class index, as argmax does."""
    v1, i1, v2, i2 = best
    other_v, other_i = torch.where(i1 == c, v2, v1)[:, None], torch.where(i1 == c, i2, i1)[:, None]
    wins = (column > other_v) | ((column == other_v) & (c < other_i))
    return torch.where(wins, (labels == c)[:, None], (other_i == labels[:, None]))


def column(model, image, w: torch.Tensor) -> torch.Tensor:
    """Scores [N, K] of K candidate class features [K, D], with the model's scale and bias."""
    return score(model, image, w.t())


@torch.no_grad()
def leave_one_text_out(model, image, labels, classnames, texts: ClassTexts, aggregate: str) -> pd.DataFrame:
    """For each class and each of its texts: top-1 and the class's own accuracy with that text left out of
    that class only. delta < 0: the text helps."""
    check_aggregate(aggregate)
    feats = aggregate_features(texts, aggregate)
    logits = column(model, image, feats)
    base = logits.argmax(1).eq(labels)
    best = others_best(logits)
    rows = []
    for c in range(len(classnames)):
        idx = texts.of_class(c)
        own = labels == c
        if len(idx) < 2:
            continue  # leaving out a class's only text leaves it nothing to score with
        t = texts.features[idx].double()
        rest = t.sum(0, keepdim=True) - t  # [n_c, D]: each text left out
        w = F.normalize(rest, dim=-1) if aggregate == "embedding_mean" else rest / (len(idx) - 1)
        correct = correct_with_column(c, column(model, image, w.float()), labels, best)  # [N, n_c]
        top1 = correct.float().mean(0)
        own_acc = correct[own].float().mean(0) if own.any() else torch.full((len(idx),), float("nan"))
        base_own = base[own].float().mean().item() if own.any() else float("nan")
        for k, j in enumerate(idx.tolist()):
            rows.append({"class_index": c, "class": classnames[c], "text": texts.prompts[j],
                         "loo_top1_delta": top1[k].item() - base.float().mean().item(),
                         "loo_class_accuracy_delta": own_acc[k].item() - base_own})
    return pd.DataFrame(rows, columns=["class_index", "class", "text", "loo_top1_delta", "loo_class_accuracy_delta"])


@torch.no_grad()
def greedy_text_selection(model, image, labels, texts: ClassTexts, aggregate: str) -> list[list[int]]:
    """Forward selection of each class's texts by top-1 on these images, every other class keeping all its
    texts; a class adds its best text while top-1 rises (ties to the earlier text). Returns each class's chosen
    rows of `texts`. Classes are selected independently of one another, so the order of classes does not matter.

    With S the sum of the chosen features and t a candidate's, the class's column is x.(S + t) / ||S + t||
    (embedding_mean, ||S + t||^2 = ||S||^2 + 2 S.t + 1) or x.(S + t) / (k + 1) (score_mean): one [N, n_c]
    product per class serves every step."""
    check_aggregate(aggregate)
    feats = aggregate_features(texts, aggregate)
    best = others_best(column(model, image, feats))
    scale = model.logit_scale.exp().float().cpu()
    bias = getattr(model, "logit_bias", None)
    bias = 0.0 if bias is None else bias.float().cpu()
    x = F.normalize(image.float(), dim=-1)
    chosen_all = []
    for c in range(texts.n_classes):
        idx = texts.of_class(c)
        t = texts.features[idx].double()
        dots = (x.double() @ t.t())  # [N, n_c]
        gram = t @ t.t()
        chosen: list[int] = []
        s_dot, s_norm2, s_gram = torch.zeros(len(x), dtype=torch.double), 0.0, torch.zeros(len(idx), dtype=torch.double)
        best_acc = -1.0
        while len(chosen) < len(idx):
            if aggregate == "embedding_mean":
                denom = (s_norm2 + 2 * s_gram + 1).clamp(min=1e-12).sqrt()
            else:
                denom = torch.full((len(idx),), float(len(chosen) + 1), dtype=torch.double)
            col = (scale * ((s_dot[:, None] + dots) / denom[None, :]) + bias).float()
            acc = correct_with_column(c, col, labels, best).float().mean(0)
            if chosen:
                acc[chosen] = -1.0
            k = int(acc.argmax())
            if acc[k].item() <= best_acc + 1e-12:
                break
            best_acc = acc[k].item()
            chosen.append(k)
            s_dot += dots[:, k]
            s_norm2 += 2 * s_gram[k].item() + 1.0
            s_gram += gram[k]
        chosen_all.append([int(idx[k]) for k in chosen])
    return chosen_all


def subset_texts(texts: ClassTexts, rows: list[int]) -> ClassTexts:
    keep = torch.tensor(sorted(rows), dtype=torch.long)
    return ClassTexts(texts.features[keep], texts.owner[keep], [texts.prompts[i] for i in keep.tolist()], texts.n_classes)


def per_class_change(labels, classnames, logits_ref: torch.Tensor, logits_set: torch.Tensor, name: str, counts) -> pd.DataFrame:
    a, b = classification_metrics(logits_ref, labels), classification_metrics(logits_set, labels)
    return pd.DataFrame({"set": name, "class_index": np.arange(len(classnames)), "class": classnames, "support": a["support"],
                         "n_texts": counts, "accuracy_templates": a["per_class_accuracy"], "accuracy": b["per_class_accuracy"],
                         "delta": b["per_class_accuracy"] - a["per_class_accuracy"]})


@dataclass(frozen=True)
class DescriptionBench:
    """What every description table is scored on: the model, the normalized image features [N, D] and labels,
    and the reference, the template ensemble (OpenAI's), whose correctness every set is tested against."""

    model: object
    image: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    template_feats: torch.Tensor  # [C, D]
    template_logits: torch.Tensor  # [N, C]
    every: Scoring  # all images, p-values against the templates

    def logits(self, class_feats: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of a [C, D] classifier on every image, or on `rows` of them."""
        return column(self.model, self.image if rows is None else self.image[rows], class_feats)


@torch.no_grad()
def run_description_experiments(model, image: torch.Tensor, labels: torch.Tensor, classnames: list[str],
                                templates: list[str], descriptions: dict[str, list[list[str]]], *,
                                random_sets: dict[str, dict[int, list[list[str]]]] | None = None,
                                aggregate: str | list[str] = "embedding_mean", bootstrap: int = 1000, seed: int = 0,
                                select_fraction: float = 0.5, batch_size: int = 256, text_cache=None,
                                progress: bool = False) -> dict:
    """All experiments on class-specific prompts, on normalized image features [N, D] and labels [N].

    `descriptions`: label -> each class's prompts (descriptions.class_prompts); `random_sets`: label -> seed ->
    each class's prompts (WaffleCLIP, controls); `aggregate`: one or several of the two aggregations (rows for
    each; the per-class analyses use the first). Returns the tables that `write_description_outputs` writes."""
    aggregates = [aggregate] if isinstance(aggregate, str) else list(aggregate)
    for a in aggregates:
        check_aggregate(a)
    encode = lambda prompts: encode_class_prompts(model, prompts, batch_size, progress, text_cache)  # noqa: E731
    template_feats = aggregate_features(encode([[t.replace("{}", c) for t in templates] for c in classnames]),
                                        "embedding_mean")  # OpenAI's ensemble
    template_logits = column(model, image, template_feats)
    every = Scoring(labels, template_logits.argmax(1).eq(labels).numpy(), int(bootstrap), int(seed), f"p_vs_{REFERENCE}")
    b = DescriptionBench(model, image, labels, classnames, template_feats, template_logits, every)
    encoded = {name: encode(prompts) for name, prompts in descriptions.items()}
    rows = description_rows(b, encoded, aggregates, len(templates))
    random, summaries = random_rows(b, random_sets or {}, aggregates, encode)
    rows += random
    tested = [r for r in rows if r["kind"] != REFERENCE]
    for r, adjusted in zip(tested, holm([r["p_vs_templates"] for r in tested])):
        r["p_vs_templates_holm"] = adjusted
    per_class, loo = class_analyses(b, encoded, aggregates[0])
    sel, held = (torch.from_numpy(part) for part in held_out_split(len(labels), share(len(labels), select_fraction), int(seed)))
    held_rows, selection = heldout_selection(b, encoded, aggregates[0], sel, held)
    return {"rows": rows, "random_summary": summaries, "heldout": held_rows, "per_class": per_class, "texts": loo,
            "selection": pd.DataFrame(selection), "selection_images": int(len(sel)), "heldout_images": int(len(held)),
            "aggregates": aggregates, "bootstrap": int(bootstrap), "seed": int(seed)}


def description_rows(b: DescriptionBench, encoded: dict[str, ClassTexts], aggregates: list[str], n_templates: int) -> list[dict]:
    """The template ensemble's row, then each description set under each aggregation, on every image."""
    rows = [b.every.row(f"{REFERENCE} ({n_templates}, embedding_mean)", b.template_logits, REFERENCE)]
    for name, texts in encoded.items():
        measured = [b.every.measure(f"{name} [{a}]", b.logits(aggregate_features(texts, a)), "descriptions")
                    for a in aggregates]
        rows += [r | {"set": name, "aggregate": a, "n_prompts": len(texts.prompts)}
                 for r, a in zip(b.every.rows(measured), aggregates)]
    return rows


def random_rows(b: DescriptionBench, random_sets: dict, aggregates: list[str], encode) -> tuple[list[dict], list[dict]]:
    """A row per random set, aggregation and seed, and per set and aggregation the mean over its seeds."""
    rows, summaries = [], []
    for name, by_seed in random_sets.items():
        for a in aggregates:
            seeds = sorted(by_seed)
            measured = [b.every.measure(f"{name} [{a}] seed {s}", b.logits(aggregate_features(encode(by_seed[s]), a)), "random")
                        for s in seeds]
            seed_rows = [r | {"set": name, "aggregate": a, "seed": s} for r, s in zip(b.every.rows(measured), seeds)]
            rows += seed_rows
            top1 = np.array([r["top1"] for r in seed_rows])
            # the population std (ddof=0), as WaffleCLIP reports it
            summaries.append({"kind": "random_mean", "name": f"{name} [{a}] mean over {len(top1)} seeds", "set": name,
                              "aggregate": a, "n_images": len(b.labels), "top1": float(top1.mean()),
                              "top1_std": float(top1.std()), "top1_min": float(top1.min()), "top1_max": float(top1.max()),
                              "n_seeds": len(top1)})
    return rows, summaries


def class_analyses(b: DescriptionBench, encoded: dict[str, ClassTexts], aggregate: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per set: each class's accuracy change against the templates, and leave-one-text-out within each class."""
    per_class, loo = [], []
    for name, texts in encoded.items():
        logits = b.logits(aggregate_features(texts, aggregate))
        per_class.append(per_class_change(b.labels, b.classnames, b.template_logits, logits, name, texts.counts().numpy()))
        loo.append(leave_one_text_out(b.model, b.image, b.labels, b.classnames, texts, aggregate).assign(set=name))
    return (pd.concat(per_class, ignore_index=True) if per_class else pd.DataFrame(),
            pd.concat(loo, ignore_index=True) if loo else pd.DataFrame())


def heldout_selection(b: DescriptionBench, encoded: dict[str, ClassTexts], aggregate: str, sel: torch.Tensor,
                      held: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """Greedy selection of each class's texts on the `sel` images, measured on the `held` rest (beside the
    templates and all texts on the same images), and the texts each class kept. Nothing when a part is empty."""
    if not (len(held) and len(sel)):
        return [], []
    on_held, on_sel = b.every.take(held), b.every.take(sel)
    rows = [on_held.row(f"{REFERENCE} (held-out images)", b.logits(b.template_feats, held), "templates_heldout")]
    selection = []
    for name, texts in encoded.items():
        chosen = greedy_text_selection(b.model, b.image[sel], b.labels[sel], texts, aggregate)
        picked = aggregate_features(subset_texts(texts, [j for rows_c in chosen for j in rows_c]), aggregate)
        everything = aggregate_features(texts, aggregate)
        rows += [on_held.row(f"{name} [{aggregate}] all texts (held-out images)", b.logits(everything, held),
                             "descriptions_heldout") | {"set": name},
                 on_held.row(f"{name} [{aggregate}] greedy selection (held-out images)", b.logits(picked, held),
                             "selected") | {"set": name},
                 on_sel.row(f"{name} [{aggregate}] greedy selection (selection images; optimistic)", b.logits(picked, sel),
                            "selected_on_selection") | {"set": name}]
        selection += [{"set": name, "class_index": c, "class": b.classnames[c], "n_texts": len(texts.of_class(c)),
                       "n_selected": len(rows_c), "selected": [texts.prompts[j] for j in rows_c]}
                      for c, rows_c in enumerate(chosen)]
    return rows, selection


def write_description_outputs(run_dir, result: dict, title: str = "", figures: bool = True) -> None:
    """descriptions.csv (every set, the seed means, the held-out selection), per_class_descriptions.csv/.png
    (the figure unless figures=False), description_texts.csv (leave-one-text-out), description_selection.csv."""
    from pathlib import Path

    from zeroshot.figures import drawing
    from zeroshot.figures.prompts import plot_description_deltas

    run_dir = Path(run_dir)
    table = pd.DataFrame([*result["rows"], *result["random_summary"], *result["heldout"]])
    for col in ("n_prompts", "seed", "n_seeds", "n_images"):  # counts stay integers beside the rows that lack them
        if col in table:
            table[col] = table[col].astype("Int64")
    table.to_csv(run_dir / "descriptions.csv", index=False)
    result["per_class"].to_csv(run_dir / "per_class_descriptions.csv", index=False)
    result["texts"].to_csv(run_dir / "description_texts.csv", index=False)
    result["selection"].to_csv(run_dir / "description_selection.csv", index=False)
    if result["per_class"].empty or not figures:
        return
    table = result["per_class"]
    table = table[table.set == table.set.iloc[0]].dropna(subset=["delta"]).sort_values("delta")
    if len(table) > 60:  # the 30 classes that lose most and the 30 that gain most
        table = pd.concat([table.head(30), table.tail(30)])
    name = str(table.set.iloc[0])
    drawing.draw(plot_description_deltas, [str(c) for c in table["class"]], [float(d) for d in table.delta],
                 run_dir / "per_class_descriptions.png", f"{name} vs templates{' | ' + title if title else ''}")
