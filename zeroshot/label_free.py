"""Prompt engineering without labels: ZPE and CARPRT prompt weighting, and CHiLS label hierarchies.

Each method reads only the images' features and the prompts' scores, never a label, so it applies where no
labelled image exists (docs/label_free_prompting.md says when each helps).

- ZPE (Allingham et al., ICML 2023): one weight per template. A template's score is the mean over the images of
  its largest logit, after the logits are corrected for word frequency by subtracting, per template and class,
  their mean over a set of images (`zpe_normalize=mean`; `none` is the naive max-logit score the paper starts
  from); the weights are the softmax of the scores (temperature `weight_temperature`).
- CARPRT (Dong et al., ICLR 2026; tmlr-group/CARPRT): one weight per template and class. Stage 1 collects, for
  each template, each image's largest logit and the class it is at; stage 2 averages (`carprt_relevance=mean`,
  the code's rule; `max`, the first abstract's) those scores per template over the images it gives to each class
  (0 for a class it gives none), and the weights are a softmax over templates per class.
Both ensembles are weighted sums of the templates' normalized text features, not renormalized, so their logits
are the weighted sums of the templates' logits (as CARPRT's code scores both).
- CHiLS (Novack et al., ICML 2023): classify among every class's subclasses (softmax over all of them), optionally
  reweight each subclass's probability by its class's own probability (the paper's headline), and predict the
  class of the best subclass.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zeroshot.errors import ConfigError, DatasetError, PromptError
from zeroshot.settings import check_choice, check_label_free, check_range

MIN_IMAGES = 2  # a score averaged over the images needs more than one to say anything about the set
# The prompts.* keys this module reads; their defaults live in configs/prompts/dataset.yaml.
KEYS = ("weighting", "weight_temperature", "zpe_normalize", "zpe_images", "carprt_relevance", "subclasses",
        "chils_reweight")


@dataclass(frozen=True)
class LabelFreeSettings:
    """What a run asked of the label-free methods (prompts.* keys): the settings that go into its identity."""

    weighting: str = "none"
    weight_temperature: float = 1.0
    zpe_normalize: str = "mean"
    zpe_images: str = "test"  # the image set ZPE's frequency correction averages over: the scored images, or a split
    carprt_relevance: str = "mean"
    subclasses: str | None = None  # FILE or a built-in hierarchy (cifar100)
    chils_reweight: bool = True

    @property
    def active(self) -> bool:
        return self.weighting != "none" or self.subclasses is not None

    def method_settings(self) -> dict:
        """The settings of the method in use only (what its identity depends on)."""
        if self.weighting == "zpe":
            return {"method": "zpe", "temperature": self.weight_temperature, "normalize": self.zpe_normalize,
                    "images": self.zpe_images}
        if self.weighting == "carprt":
            return {"method": "carprt", "temperature": self.weight_temperature, "relevance": self.carprt_relevance}
        if self.subclasses is not None:
            return {"method": "chils", "reweight": self.chils_reweight}
        return {"method": "none"}


def settings_from(p) -> LabelFreeSettings:
    """The label-free settings of a composed `prompts` config, checked."""
    missing = [k for k in KEYS if k not in p]
    if missing:
        raise PromptError(f"the prompts config lacks {', '.join(missing)}: prompt configs inherit configs/prompts/dataset.yaml")
    # the CLI checked these keys already (settings.py); a Python caller's are checked here, through the same entries
    for key in ("weighting", "zpe_normalize", "carprt_relevance"):
        check_choice(f"prompts.{key}", p[key])
    check_range("prompts.weight_temperature", p.weight_temperature)
    check_label_free(p)
    return LabelFreeSettings(str(p.weighting), float(p.weight_temperature), str(p.zpe_normalize), str(p.zpe_images),
                             str(p.carprt_relevance), None if p.subclasses in (None, "") else str(p.subclasses),
                             bool(p.chils_reweight))


def check_config(cfg, templates: list[str], classnames: list[str], class_specific: bool) -> LabelFreeSettings | None:
    """The label-free settings of a run (None when none is asked for), checked before the model loads: a subclass
    file against the class names, a weighting against the templates, ZPE's correction split against the dataset."""
    s = settings_from(cfg.prompts)
    if not s.active:
        return None
    if class_specific:
        raise PromptError("prompts.weighting and prompts.subclasses work on templates x class names, not on class-specific "
                          "prompts (prompts.descriptions, prompts.waffle): use one or the other")
    if s.subclasses is not None:
        from zeroshot.prompts.hierarchy import resolve_hierarchy

        resolve_hierarchy(s.subclasses, classnames)
        calib = cfg.get("calibration")
        if calib is not None and calib.temperature == "fit" and calib.split is not None:
            raise ConfigError("prompts.subclasses (CHiLS) is not a linear classifier to score another split with: use "
                              "calibration.split=null (a held-out fraction of the scored images) or no temperature")
    else:
        check_usable(s.weighting, len(templates), MIN_IMAGES)
    splits = cfg.dataset.get("splits") or {}
    if s.weighting == "zpe" and s.zpe_images != "test" and s.zpe_images not in splits:
        raise DatasetError(f"prompts.zpe_images={s.zpe_images} is not a split of dataset {cfg.dataset.name!r} (its splits: "
                           f"{', '.join(splits) or 'none'}); name one, or prompts.zpe_images=test for the scored images")
    return s

def check_usable(method: str, n_templates: int, n_images: int, where: str = "the scored images") -> None:
    """One line for a weighting asked of one template, or of too few images."""
    if n_templates < 2:
        raise PromptError(f"prompts.weighting={method} weights templates, but the prompt set has {n_templates}: give "
                          "a pool of templates (e.g. prompts=imagenet) or prompts.weighting=none")
    if n_images < MIN_IMAGES:
        raise PromptError(f"prompts.weighting={method} scores templates on unlabelled images and needs at least "
                          f"{MIN_IMAGES}; {where} number {n_images}. Use more images or prompts.weighting=none")


def template_logits(image: torch.Tensor, feats: torch.Tensor, scale: float, bias: float = 0.0):
    """Yield each template's logits [N, C] (scale * cosine + bias) from normalized image features [N, D] and
    normalized text features [T, C, D]: one template at a time, never [T, N, C] (ImageNet: 16 GB)."""
    for t in range(feats.shape[0]):
        yield scale * image @ feats[t].t() + bias


def zpe_scores(image: torch.Tensor, feats: torch.Tensor, scale: float, normalize: str = "mean",
               correction: torch.Tensor | None = None, bias: float = 0.0) -> torch.Tensor:
    """ZPE's score per template [T]: mean over the images of the largest (corrected) logit.

    `normalize=mean` subtracts, per template and class, the mean logit over the `correction` images (the scored
    images themselves when None): logits are linear in the image, so that mean is the logit of the mean image
    feature. `normalize=none`: the raw max-logit score."""
    ref = (image if correction is None else correction).double().mean(dim=0)  # [D]
    scores = []
    for t, logits in enumerate(template_logits(image.double(), feats.double(), scale, bias)):
        if normalize == "mean":
            logits = logits - (scale * feats[t].double() @ ref + bias)  # [C]: the correction set's mean logit per class
        scores.append(logits.max(dim=1).values.mean())
    return torch.stack(scores).float()


def zpe_weights(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[T] weights summing to 1: softmax of the scores over templates."""
    return torch.softmax(scores.double() / temperature, dim=0).float()


def carprt_relevance(image: torch.Tensor, feats: torch.Tensor, scale: float, relevance: str = "mean",
                     bias: float = 0.0) -> torch.Tensor:
    """CARPRT's stages 1 and 2a: [T, C] relevance of each template to each class, from each image's largest logit
    under that template, gathered at the class it is at; 0 where a template gives a class no image."""
    n_templates, n_classes, _ = feats.shape
    out = torch.zeros(n_templates, n_classes, dtype=torch.float64)
    for t, logits in enumerate(template_logits(image.double(), feats.double(), scale, bias)):
        top, cls = logits.max(dim=1)  # stage 1: each image's largest score under template t, and its class
        counts = torch.bincount(cls, minlength=n_classes)
        if relevance == "mean":
            out[t] = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, cls, top) / counts.clamp(min=1)
        else:
            filled = torch.full((n_classes,), float("-inf"), dtype=torch.float64).scatter_reduce(0, cls, top, "amax")
            out[t] = torch.where(counts > 0, filled, torch.zeros_like(filled))
    return out.float()


def carprt_weights(relevance: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[T, C] weights, each class's column summing to 1: softmax over templates per class (stage 2b)."""
    return torch.softmax(relevance.double() / temperature, dim=0).float()


def weighted_features(feats: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[C, D] class features: sum over templates of weight x normalized feature, with weights [T] or [T, C]."""
    w = weights[:, None] if weights.ndim == 1 else weights  # [T, 1] or [T, C]
    return (w.double()[..., None] * feats.double()).sum(dim=0).float()


@dataclass
class Weighting:
    """A label-free weighting's outcome: the weights, the scores they came from, and the class features."""

    method: str
    weights: torch.Tensor  # [T] (zpe) or [T, C] (carprt)
    scores: torch.Tensor  # the same shape: ZPE scores or CARPRT relevances
    class_features: torch.Tensor  # [C, D]


def weigh(settings: LabelFreeSettings, image: torch.Tensor, feats: torch.Tensor, scale: float, bias: float = 0.0,
          correction: torch.Tensor | None = None) -> Weighting:
    """The configured weighting (zpe or carprt) on normalized image features [N, D] and text features [T, C, D]."""
    method = settings.weighting
    check_usable(method, feats.shape[0], len(image))
    if method == "zpe":
        if correction is not None:
            check_usable(method, feats.shape[0], len(correction), f"the correction images ({settings.zpe_images})")
        scores = zpe_scores(image, feats, scale, settings.zpe_normalize, correction, bias)
        weights = zpe_weights(scores, settings.weight_temperature)
    elif method == "carprt":
        scores = carprt_relevance(image, feats, scale, settings.carprt_relevance, bias)
        weights = carprt_weights(scores, settings.weight_temperature)
    else:
        raise ValueError(f"weigh() needs a weighting, not {method!r}")
    return Weighting(method, weights, scores, weighted_features(feats, weights))


def chils_scores(sub_logits: torch.Tensor, class_logits: torch.Tensor, parent: torch.Tensor,
                 reweight: bool = True) -> torch.Tensor:
    """CHiLS: [N, C] scores whose argmax is the class of the most probable subclass.

    sub_logits [N, S] over every class's subclasses (one softmax over all S), class_logits [N, C], parent [S] the
    class of each subclass. With `reweight`, a subclass's probability is multiplied by its class's probability.
    A class scores its best subclass."""
    p = torch.softmax(sub_logits.double(), dim=1)
    if reweight:
        p = p * torch.softmax(class_logits.double(), dim=1)[:, parent]
    out = torch.zeros(len(p), class_logits.shape[1], dtype=torch.float64)
    return out.scatter_reduce(1, parent.expand(len(p), -1), p, "amax", include_self=True).float()


def weights_hash(tensor: torch.Tensor) -> str:
    """sha256 of weights rounded to 6 decimals (what a report row depends on, not the last bit's noise)."""
    values = [round(float(v), 6) for v in tensor.flatten()]
    return hashlib.sha256(json.dumps({"shape": list(tensor.shape), "values": values}).encode()).hexdigest()


def identity(settings: LabelFreeSettings, digest: str) -> dict:
    """What a label-free classifier adds to the prompts' identity: the method, its settings and the hash of its
    weights (zpe, carprt) or of its subclass mapping (chils)."""
    return {**settings.method_settings(), "digest": digest}


def combined_hash(prompts_hash: str, ident: dict) -> str:
    return hashlib.sha256(json.dumps({"prompts": prompts_hash, "label_free": ident}, sort_keys=True).encode()).hexdigest()


def scale_and_bias(model) -> tuple[float, float]:
    """The model's logit scale and bias (SigLIP), as plain numbers."""
    bias = getattr(model, "logit_bias", None)
    return float(model.logit_scale.exp()), 0.0 if bias is None else float(bias)


def normalized(image: torch.Tensor) -> torch.Tensor:
    return F.normalize(image.float(), dim=-1)


def template_features(model, classnames: list[str], templates: list[str], batch_size: int = 256, text_cache=None,
                      progress: bool = False) -> torch.Tensor:
    """Normalized text features [T, C, D] of every template filled with every class name (through the text cache)."""
    from zeroshot.classifier import encode_prompts

    prompts = [t.replace("{}", c) for t in templates for c in classnames]
    return encode_prompts(model, prompts, batch_size, progress, text_cache).view(len(templates), len(classnames), -1)


@dataclass
class LabelFreeRun:
    """A label-free classifier's outcome on one image set: its logits, identity and weights (or mapping)."""

    settings: LabelFreeSettings
    logits: torch.Tensor  # [N, C]; CHiLS: log of its class scores
    identity: dict
    table: list[dict]  # the weights per template (zpe), per template and class (carprt), or the mapping (chils)
    classifier: torch.Tensor | None = None  # [D, C] for zpe and carprt: a linear classifier like build_classifier's

    @property
    def method(self) -> str:
        return self.identity["method"]

    @property
    def label(self) -> str:
        return describe(self.settings)

    @property
    def short(self) -> str:
        """The method in a few characters, for a summary line: zpe, carprt, chils, chils-plain (no reweighting)."""
        plain = self.method == "chils" and not self.settings.chils_reweight
        return f"{self.method}-plain" if plain else self.method


def describe(s: LabelFreeSettings) -> str:
    """A row's name: the method and the settings that differ from its headline."""
    m = s.method_settings()
    if m["method"] == "zpe":
        return f"ZPE weights (normalize={s.zpe_normalize}, images={s.zpe_images}, T={s.weight_temperature:g})"
    if m["method"] == "carprt":
        return f"CARPRT class-aware weights (relevance={s.carprt_relevance}, T={s.weight_temperature:g})"
    return f"CHiLS subclasses ({'reweighted' if s.chils_reweight else 'no reweighting'}; {s.subclasses})"


def run_weighting(s: LabelFreeSettings, model, image: torch.Tensor, feats: torch.Tensor, templates: list[str],
                  classnames: list[str], *, correction: torch.Tensor | None = None) -> LabelFreeRun:
    """ZPE or CARPRT on normalized image features [N, D] and template features [T, C, D]."""
    from zeroshot.classifier import logits as score

    scale, bias = scale_and_bias(model)
    w = weigh(s, image, feats, scale, bias, correction)
    if w.weights.ndim == 1:
        table = [{"method": w.method, "template": t, "class": "", "score": float(sc), "weight": float(x)}
                 for t, sc, x in zip(templates, w.scores, w.weights)]
    else:
        table = [{"method": w.method, "template": t, "class": c, "score": float(w.scores[i, j]), "weight": float(w.weights[i, j])}
                 for i, t in enumerate(templates) for j, c in enumerate(classnames)]
    classifier = w.class_features.t().contiguous()
    return LabelFreeRun(s, score(model, image, classifier), identity(s, weights_hash(w.weights)), table, classifier)


def run_chils(s: LabelFreeSettings, model, image: torch.Tensor, feats: torch.Tensor, templates: list[str],
              classnames: list[str], *, batch_size: int = 256, text_cache=None) -> LabelFreeRun:
    """CHiLS with the subclasses of `s.subclasses`, each prompted with the same templates as the classes (OpenAI's
    ensemble for both), on normalized image features [N, D] and the classes' template features [T, C, D]."""
    from zeroshot.classifier import logits as score
    from zeroshot.prompts.hierarchy import resolve_hierarchy

    h = resolve_hierarchy(s.subclasses, classnames)
    sub = template_features(model, h.flat, templates, batch_size, text_cache)  # [T, S, D]
    sub_logits = score(model, image, F.normalize(sub.mean(dim=0), dim=-1).t())  # [N, S]
    class_logits = score(model, image, F.normalize(feats.mean(dim=0), dim=-1).t())  # [N, C]
    scores = chils_scores(sub_logits, class_logits, torch.tensor(h.parent), s.chils_reweight)
    table = [{"method": "chils", "template": "", "class": classnames[c], "subclass": name}
             for c, name in zip(h.parent, h.flat)]
    return LabelFreeRun(s, scores.clamp(min=1e-30).log(), identity(s, h.digest) | {"source": h.source}, table)


def run_label_free(s: LabelFreeSettings, model, image: torch.Tensor, feats: torch.Tensor, templates: list[str],
                   classnames: list[str], *, batch_size: int = 256, text_cache=None,
                   correction: torch.Tensor | None = None) -> LabelFreeRun:
    """The configured label-free classifier (weighting or subclasses) on normalized image features."""
    if s.subclasses is not None:
        return run_chils(s, model, image, feats, templates, classnames, batch_size=batch_size, text_cache=text_cache)
    return run_weighting(s, model, image, feats, templates, classnames, correction=correction)
