"""Zero-shot classifier weights from prompts: encode, L2-normalize each prompt, average per class, renormalize."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tokenizer_for(model):
    """The tokenizer the model was trained with: its own `tokenize` (set by the loader), else CLIP's BPE."""
    tokenize = getattr(model, "tokenize", None)
    if tokenize is not None:
        return tokenize
    from functools import partial

    from .tokenizer import tokenize

    return partial(tokenize, context_length=model.context_length)


def encode_prompts(
    model,
    prompts: list[str],
    batch_size: int = 256,
    progress: bool = False,
    text_cache=None,
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

    from .features import check_finite

    unique = list(dict.fromkeys(prompts))
    known: dict[str, torch.Tensor] = text_cache.get(unique) if text_cache is not None else {}
    todo = [p for p in unique if p not in known]
    if todo:
        device = next(model.parameters()).device
        tokens = (tokenize or tokenizer_for(model))(todo)  # [U, L]
        lengths = (tokens != 0).sum(dim=-1)
        order = torch.argsort(lengths, stable=True)
        fresh = torch.empty(len(todo), model.embed_dim)
        with torch.inference_mode(), tqdm(total=len(todo), desc="text", unit="prompt", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                idx = order[start : start + batch_size]
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


def build_classifier(
    model,
    classnames: list[str],
    templates: list[str],
    batch_size: int = 256,
    progress: bool = False,
    text_cache=None,
) -> torch.Tensor:
    """Zero-shot weights [D, C]: every template filled with each class name, prompt features L2-normalized,
    averaged per class, and the average renormalized (OpenAI's prompt ensembling)."""
    if not classnames:
        raise ValueError("build_classifier needs at least one class name")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"Template {t!r} must contain exactly one '{{}}' for the class name")
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    feats = encode_prompts(model, prompts, batch_size, progress, text_cache)  # [C*T, D]
    feats = feats.view(len(classnames), len(templates), -1)  # [C, T, D]
    weights = F.normalize(feats.mean(dim=1), dim=-1)  # [C, D]
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


def get_tokenizer(model):
    """The model's own tokenizer: texts -> token ids for `model.encode_text` (CLIP's BPE, or the backend's)."""
    return tokenizer_for(model)
