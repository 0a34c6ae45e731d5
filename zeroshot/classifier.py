"""The text side of zero-shot classification: prompts -> normalized text features -> classifier weights [D, C].

Templates x class names, L2-normalized, averaged per class and renormalized (OpenAI's prompt ensembling), or
each class's own prompts (descriptions, WaffleCLIP) aggregated by `embedding_mean` or `score_mean`; and
scoring with the model's own logit scale, bias and softmax or sigmoid. Unique prompts are encoded once, in
length buckets, through the text cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zeroshot.errors import PromptError
from zeroshot.settings import CHOICES, check_choice

AGGREGATES = CHOICES["prompts.aggregate"]


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
    """`aggregate` as a Python caller gave it, checked against settings.py's choices (the CLI checks it there)."""
    return check_choice("prompts.aggregate", aggregate)


def encode_class_prompts(model, class_prompts: list[list[str]], batch_size: int = 256, progress: bool = False,
                         text_cache=None) -> ClassTexts:
    """Encode every class's prompts in one call of classifier.encode_prompts: each unique prompt once (prompts
    shared between classes too), batched by token length, through the text cache."""

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


def get_tokenizer(model):
    """The model's own tokenizer, texts -> token ids for `model.encode_text`: its own `tokenize` (set by the loader,
    e.g. a backend's), else CLIP's BPE."""
    tokenize = getattr(model, "tokenize", None)
    if tokenize is not None:
        return tokenize
    from functools import partial

    from zeroshot.models.tokenizer import tokenize

    return partial(tokenize, context_length=model.context_length)


def encode_prompts(
    model,
    prompts: list[str],
    batch_size: int = 256,
    progress: bool = False,
    text_cache=None,
    *,
    normalize: bool = True,
    tokenize=None,
) -> torch.Tensor:
    """Text features [P, D] in fp32, one row per prompt.

    Each unique prompt is encoded once, and prompts are batched by token length: under the causal mask the
    readout ignores the padding after it, and `encode_text` cuts each batch to its longest prompt, so
    similar lengths together waste the least work.
    `text_cache` (see features.TextCache) supplies and keeps the features of prompts seen before.
    `tokenize` replaces the model's tokenizer (retrieval passes one that truncates over-long captions).
    """
    from tqdm import tqdm

    from zeroshot.features.extract import check_finite

    unique = list(dict.fromkeys(prompts))
    known: dict[str, torch.Tensor] = text_cache.get(unique) if text_cache is not None else {}
    todo = [p for p in unique if p not in known]
    if todo:
        device = next(model.parameters()).device
        tokens = (tokenize or get_tokenizer(model))(todo)  # [U, L]
        fresh = torch.empty(len(todo), model.embed_dim)
        with torch.inference_mode(), tqdm(total=len(todo), desc="text", unit="prompt", disable=not progress) as bar:
            for idx in length_batches((tokens != 0).sum(dim=-1), batch_size):
                feats = model.encode_text(tokens[idx].to(device, non_blocking=True)).float().cpu()
                check_finite(feats, lambda row: repr(todo[int(idx[row])]), "prompt")
                fresh[idx] = feats
                bar.update(len(idx))
        new = dict(zip(todo, fresh))
        if text_cache is not None:
            text_cache.put(new)
        known.update(new)
    feats = torch.stack([known[p] for p in prompts])  # [P, D]
    return F.normalize(feats, dim=-1) if normalize else feats


def length_batches(lengths: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Positions grouped into batches of at most `batch_size`, shortest prompts first; a batch ends where the token
    length changes once it holds a quarter of `batch_size`, so that most batches pad nothing (1,000 ImageNet
    prompts: 9,290 tokens through the tower instead of 11,344 in plain slices of the sorted order)."""
    order = torch.argsort(lengths, stable=True).tolist()
    sorted_lengths = lengths[order].tolist()  # plain ints: a tensor element per comparison costs microseconds
    batches, start = [], 0
    for i in range(1, len(order) + 1):
        size = i - start
        if i == len(order) or size == batch_size or (
                size >= max(1, batch_size // 4) and sorted_lengths[i] != sorted_lengths[i - 1]):
            batches.append(torch.tensor(order[start:i], dtype=torch.long))
            start = i
    return batches


def build_classifier(
    model,
    classnames: list[str],
    templates: list[str],
    batch_size: int = 256,
    progress: bool = False,
    text_cache=None,
    *,
    aggregate: str = "embedding_mean",
) -> torch.Tensor:
    """Zero-shot weights [D, C]: every template filled with each class name, prompt features L2-normalized,
    averaged per class, and the average renormalized (OpenAI's prompt ensembling, `embedding_mean`); or, with
    `score_mean` (DCLIP's rule), the average left unnormalized, so that logits are the mean of the prompts'
    cosines. Class-specific prompts: build_class_classifier."""
    check_aggregate(aggregate)
    if not classnames:
        raise ValueError("build_classifier needs at least one class name")
    for t in templates:
        if t.count("{}") != 1:
            raise PromptError(f"Template {t!r} must contain exactly one '{{}}' for the class name")
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    feats = encode_prompts(model, prompts, batch_size, progress, text_cache)  # [C*T, D]
    feats = feats.view(len(classnames), len(templates), -1)  # [C, T, D]
    weights = feats.mean(dim=1)  # [C, D]
    if aggregate == "embedding_mean":
        weights = F.normalize(weights, dim=-1)
    return weights.t().contiguous()  # [D, C]


def logits(model, image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """[N, C] scores: logit_scale * cosine similarity, plus the model's logit_bias where it has one (SigLIP)."""
    out = model.logit_scale.exp().float().cpu() * F.normalize(image_features.float(), dim=-1) @ classifier.float().cpu()
    bias = getattr(model, "logit_bias", None)
    return out if bias is None else out + bias.float().cpu()


def probability_kind(model) -> str:
    """"sigmoid" for models trained with a sigmoid loss and a logit_bias (SigLIP), else "softmax" (CLIP)."""
    return "sigmoid" if getattr(model, "logit_bias", None) is not None else "softmax"


def probabilities_from_logits(model, scores: torch.Tensor) -> torch.Tensor:
    """Class probabilities in the model's own terms: softmax over classes (CLIP), or an independent sigmoid per
    class (SigLIP; see probability_kind). Argmax metrics are the same either way."""
    return scores.sigmoid() if probability_kind(model) == "sigmoid" else scores.softmax(dim=-1)


def probabilities(model, image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """[N, C] probabilities of `image_features` against a `build_classifier` matrix, as the model was trained to
    give them: softmax(logit_scale * cos) for CLIP, sigmoid(logit_scale * cos + logit_bias) per class for SigLIP."""
    return probabilities_from_logits(model, logits(model, image_features, classifier))

