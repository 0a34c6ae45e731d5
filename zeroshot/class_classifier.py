"""Zero-shot weights from class-specific prompts: every class has its own list of prompts, of any length.

Two aggregations, both named:
- `embedding_mean` (OpenAI's prompt ensembling, CuPL): normalize each prompt's features, average per class,
  renormalize the average;
- `score_mean` (DCLIP, WaffleCLIP): a class's score is the mean of its prompts' cosine similarities. For a unit
  image feature x and unit prompt features t_j, mean_j cos(x, t_j) = x . mean_j t_j, so the weights are the
  per-class means of the normalized features, *not* renormalized. `classifier.logits` multiplies by the logit
  scale and adds the bias after the product, so logit_scale * mean_j cos(x, t_j) + bias comes out exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import PromptError

AGGREGATES = ("embedding_mean", "score_mean")


@dataclass
class ClassTexts:
    """Normalized prompt features [P, D] of all classes' prompts, flattened, with each row's class [P]."""

    features: torch.Tensor
    owner: torch.Tensor
    prompts: list[str]
    n_classes: int

    def counts(self) -> torch.Tensor:
        return torch.bincount(self.owner, minlength=self.n_classes)

    def of_class(self, c: int) -> torch.Tensor:
        return torch.nonzero(self.owner == c).flatten()


def check_aggregate(aggregate: str) -> str:
    if aggregate not in AGGREGATES:
        raise PromptError(f"prompts.aggregate={aggregate!r} is not one of: {', '.join(AGGREGATES)}")
    return aggregate


def encode_class_prompts(model, class_prompts: list[list[str]], batch_size: int = 256, progress: bool = False,
                         text_cache=None) -> ClassTexts:
    """Encode every class's prompts in one call of classifier.encode_prompts: each unique prompt once (prompts
    shared between classes too), batched by token length, through the text cache."""
    from .classifier import encode_prompts

    if not class_prompts:
        raise PromptError("class-specific prompts need at least one class")
    empty = [c for c, p in enumerate(class_prompts) if not p]
    if empty:
        raise PromptError(f"classes {empty[:10]} have no prompt; every class needs at least one")
    flat = [p for prompts in class_prompts for p in prompts]
    owner = torch.repeat_interleave(torch.arange(len(class_prompts)), torch.tensor([len(p) for p in class_prompts]))
    feats = encode_prompts(model, flat, batch_size, progress, text_cache)  # [P, D], normalized
    return ClassTexts(feats, owner, flat, len(class_prompts))


def aggregate_features(texts: ClassTexts, aggregate: str = "embedding_mean") -> torch.Tensor:
    """[C, D] class features: each class's mean over exactly its own rows (renormalized for embedding_mean)."""
    check_aggregate(aggregate)
    feats = texts.features.double()  # sums of ~100 rows: keep the order of summation from mattering
    total = torch.zeros(texts.n_classes, feats.shape[1], dtype=feats.dtype).index_add_(0, texts.owner, feats)
    if aggregate == "embedding_mean":
        return F.normalize(total, dim=-1).float()
    return (total / texts.counts().clamp(min=1)[:, None].to(total.dtype)).float()


def build_class_classifier(model, class_prompts: list[list[str]], aggregate: str = "embedding_mean",
                           batch_size: int = 256, progress: bool = False, text_cache=None) -> torch.Tensor:
    """Zero-shot weights [D, C] from each class's own prompts; use with classifier.logits."""
    check_aggregate(aggregate)
    texts = encode_class_prompts(model, class_prompts, batch_size, progress, text_cache)
    return aggregate_features(texts, aggregate).t().contiguous()
