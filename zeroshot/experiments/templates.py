"""Template experiments: each template's features, OpenAI's ensemble, and greedy forward selection in closed form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zeroshot.classifier import encode_prompts


def template_features(model, classnames: list[str], templates: list[str], cfg, cache) -> torch.Tensor:
    """Normalized text features [T, C, D] of every template filled with every class name."""
    prompts = [t.replace("{}", c) for t in templates for c in classnames]
    feats = encode_prompts(model, prompts, cfg.text_batch_size, cfg.progress, cache)  # [T*C, D]
    return feats.view(len(templates), len(classnames), -1)  # [T, C, D]


def ensemble(feats: torch.Tensor) -> torch.Tensor:
    """OpenAI's ensembling: mean of normalized prompt features per class, renormalized. [T, C, D] -> [C, D]."""
    return F.normalize(feats.mean(dim=0), dim=-1)


def greedy_selection(image: torch.Tensor, labels: torch.Tensor, feats: torch.Tensor, max_size: int | None) -> list[int]:
    """Forward selection of templates by top-1 on `image`: add the best template while accuracy rises.

    With S the running sum of chosen features and f_t a candidate's, the ensemble logits for class c are
    (x.S_c + x.f_tc) / ||S_c + f_tc||, and ||S_c + f_tc||^2 = ||S_c||^2 + 2 S_c.f_tc + 1, so a candidate
    costs one [N, D] x [D, C] product. Ties go to the earlier template in the pool: deterministic.
    """
    n_templates, n_classes, _ = feats.shape
    chosen: list[int] = []
    total = torch.zeros(n_classes, feats.shape[2])
    base_logits = torch.zeros(len(image), n_classes)
    best_acc = -1.0
    while len(chosen) < (max_size or n_templates):
        best = None
        for t in range(n_templates):
            if t in chosen:
                continue
            norm = ((total * total).sum(-1) + 2 * (total * feats[t]).sum(-1) + 1).sqrt()  # [C]
            logits = (base_logits + image @ feats[t].t()) / norm  # [N, C]
            acc = (logits.argmax(1) == labels).float().mean().item()
            if acc > best_acc + 1e-12:
                best, best_acc = t, acc
        if best is None:
            break
        chosen.append(best)
        total += feats[best]
        base_logits += image @ feats[best].t()
    return chosen
