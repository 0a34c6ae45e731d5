"""Image-caption selection: per instance, is each image's right caption the most similar of its candidates (text),
is each right caption's own image the most similar of the instance's images (image), and both (group)?

Ties between the right and a wrong candidate count as each benchmark's own code counts them (`TIES`):
- "strict": the right one must score strictly higher than every other, a tie is wrong. SugarCrepe's main_eval.py
  (`pos_score > neg_score`), Winoground's definition (f(C0,I0) > f(C1,I0) ...), and ARO's VG-Relation and
  VG-Attribution (argmax over [false, true]: the first, false, wins a tie).
- "first": the first highest-scoring candidate is chosen (argmax), so the right one wins a tie with any candidate
  after it. ARO's COCO-Order and Flickr30k-Order (argmax, the true caption first) and CLIP_benchmark's
  image_caption_selection (argmax, the right caption first) count this way.
Away from exact ties (which need two identical captions or images) the two rules agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TIES = ("strict", "first")


@dataclass
class Outcomes:
    """Per instance, in the instances' order: 1/0, and NaN for an image outcome of a one-image instance."""

    text: np.ndarray
    image: np.ndarray
    group: np.ndarray
    scores: list[np.ndarray]  # [n_images, n_captions] cosine similarities of each instance


def chosen_right(scores: torch.Tensor, right: torch.Tensor, ties: str) -> torch.Tensor:
    """[B, R] whether candidate `right` wins along the last axis of scores [B, R, C]."""
    if ties == "first":
        return scores.argmax(-1) == right
    own = scores.gather(-1, right[..., None])
    beaten = (scores >= own).sum(-1) - 1  # others at least as high as the right one (itself excluded)
    return beaten == 0


def outcomes(image_features: torch.Tensor, text_features: torch.Tensor, instances: list[tuple[list[int], list[int], list[int]]],
             ties: str = "strict") -> Outcomes:
    """`instances[k]` = (image rows, caption rows, answers): answers[i] is the index (in the instance's captions) of
    image i's right caption. Instances of one shape are scored together, as one batched product."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    n = len(instances)
    text, image, group = np.zeros(n), np.full(n, np.nan), np.zeros(n)
    scores: list[np.ndarray | None] = [None] * n
    shapes: dict[tuple[int, int], list[int]] = {}
    for k, (im, tx, ans) in enumerate(instances):
        shapes.setdefault((len(im), len(tx)), []).append(k)
    for (ni, nt), ks in shapes.items():
        im = torch.tensor([instances[k][0] for k in ks], dtype=torch.long)
        tx = torch.tensor([instances[k][1] for k in ks], dtype=torch.long)
        ans = torch.tensor([instances[k][2] for k in ks], dtype=torch.long)  # [B, ni]
        s = torch.einsum("bid,btd->bit", images[im], texts[tx])  # [B, ni, nt]
        t_ok = chosen_right(s, ans, ties).all(-1)
        ok = t_ok
        if ni > 1:  # each right caption against the instance's images: its own (image i) must win
            cols = s.gather(2, ans[:, None, :].expand(-1, ni, -1)).transpose(1, 2)  # [B, ni (caption), ni (image)]
            i_ok = chosen_right(cols, torch.arange(ni).expand(len(ks), -1), ties).all(-1)
            image[ks] = i_ok.double().numpy()
            ok = t_ok & i_ok
        text[ks] = t_ok.double().numpy()
        group[ks] = ok.double().numpy()
        for row, k in enumerate(ks):
            scores[k] = s[row].numpy()
    return Outcomes(text, image, group, scores)


def group_accuracies(correct: np.ndarray, groups: list[str], min_count: int = 1, exclude=()) -> dict[str, tuple[float, int]]:
    """{group: (accuracy, count)} over groups with at least `min_count` instances, less `exclude`, sorted by name."""
    out = {}
    labels = np.asarray(groups, dtype=object)
    for g in sorted(set(groups)):
        mask = labels == g
        if mask.sum() >= min_count and g not in set(exclude):
            out[g] = (float(correct[mask].mean()), int(mask.sum()))
    return out


def macro(per_group: dict[str, tuple[float, int]]) -> float:
    """The unweighted mean over groups (ARO's macro accuracy, SugarCrepe's group means)."""
    return float(np.mean([a for a, _ in per_group.values()])) if per_group else float("nan")
