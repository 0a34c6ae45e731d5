"""PromptLab: a prompt loop in Python. A run's image features are loaded once (through the feature cache); each
`score` call encodes only the prompts it has not seen (the text cache) and returns accuracy, its bootstrap CI and
the paired bootstrap p-value against a baseline, as `zeroshot prompts` computes them.

    lab = zeroshot.PromptLab("cifar10")                  # or PromptLab.from_run("results/...")
    lab.score(["a photo of a {}.", "itap of a {}."])      # templates x class names, OpenAI's ensemble
    lab.score(templates, weighting="zpe")                 # the label-free weighting of the same templates
    lab.score({"cat": ["a photo of a cat."], ...})        # class-specific texts, one list per class
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zeroshot.errors import MissingFileError, PromptError
from zeroshot.settings import check_choice, check_settings


@dataclass
class LabResult:
    """One prompt set scored on the lab's images: top-1, its 95% bootstrap CI, and the paired bootstrap p-value
    against the baseline on the same resamples."""

    top1: float
    ci_low: float
    ci_high: float
    p_vs_baseline: float
    baseline_top1: float
    baseline: str
    n_images: int
    n_prompts: int
    n_encoded: int  # prompts this call sent through the text encoder (the rest came from the text cache)
    weighting: str
    seconds: float

    def __str__(self) -> str:
        return (f"top-1 {100 * self.top1:.2f}% [{100 * self.ci_low:.1f}, {100 * self.ci_high:.1f}] | baseline "
                f"{100 * self.baseline_top1:.2f}% ({self.baseline}), p = {self.p_vs_baseline:.3g} | {self.n_prompts} "
                f"prompts, {self.n_encoded} encoded, {self.weighting} | {self.seconds * 1000:.0f} ms")


class _MemoryCache:
    """The text cache's interface kept in memory, for a lab run with cache=false."""

    def __init__(self):
        self.table: dict[str, torch.Tensor] = {}

    def get(self, prompts):
        return {p: self.table[p] for p in prompts if p in self.table}

    def put(self, new):
        self.table.update(new)


class PromptLab:
    """Image features of one dataset and model, loaded once; `score` prompt sets against them."""

    MEMO = 64  # prompt sets whose class features are kept whole

    def __init__(self, dataset: str = "cifar10", model: str | None = None, overrides: list[str] | tuple = (),
                 config: str = "prompts"):
        from hydra import compose, initialize_config_dir

        from zeroshot.paths import config_dir

        chosen = [f"dataset={dataset}", *([f"model={model}"] if model else []), "progress=false", *overrides]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            self._load(compose(config, overrides=chosen))

    @classmethod
    def from_run(cls, run_dir: str | Path, overrides: list[str] | tuple = ()) -> "PromptLab":
        """The dataset, model and settings a run recorded (its config.yaml), over `zeroshot prompts`' defaults."""
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf, open_dict

        from zeroshot.paths import config_dir

        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            raise MissingFileError(f"{path} does not exist: give a run directory of `zeroshot eval` or `zeroshot prompts`")
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            base = compose("prompts")
        with open_dict(base):
            cfg = OmegaConf.merge(base, OmegaConf.load(path), OmegaConf.from_dotlist(["progress=false", *overrides]))
        lab = cls.__new__(cls)
        lab._load(cfg)
        return lab

    @classmethod
    def from_features(cls, model, features: torch.Tensor, labels: torch.Tensor, classnames: list[str], *,
                      overrides: list[str] | tuple = (), text_cache=None) -> "PromptLab":
        """A lab on image features you computed ([N, D], with labels [N] in the order of `classnames`) and a model
        from zeroshot.load; settings (bootstrap, seed, baseline) from `zeroshot prompts`' config and `overrides`."""
        from hydra import compose, initialize_config_dir

        from zeroshot.paths import config_dir

        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("prompts", overrides=["progress=false", *overrides])
        check_settings(cfg)
        if len(features) != len(labels) or int(labels.max()) >= len(classnames):
            raise PromptError(f"{len(features)} feature rows, {len(labels)} labels and {len(classnames)} class names "
                              "do not fit: one label per row, each below the number of classes")
        lab = cls.__new__(cls)
        lab.model = model
        lab._init(cfg, features, labels, classnames, text_cache or _MemoryCache())
        return lab

    def _load(self, cfg) -> None:
        from zeroshot.pipeline import image_features, prepare, text_cache

        check_settings(cfg)  # as the CLI's dispatch does, before any work
        setup = prepare(cfg)
        feats = image_features(cfg, setup, False)
        self.model = setup.model
        self._init(cfg, feats.features, feats.labels, setup.classnames, text_cache(setup) or _MemoryCache())

    def _init(self, cfg, features: torch.Tensor, labels: torch.Tensor, classnames: list[str], cache) -> None:
        from zeroshot.metrics.stats import resample_indices

        self.cfg = cfg
        self.image = F.normalize(features.float(), dim=-1)  # [N, D]
        self.labels = labels
        self.classnames = list(classnames)
        self.text_cache = cache
        # the bootstrap resamples as counts [B, N]: a resample's accuracy is one row times the 0/1 vector, the same
        # number correct[idx].mean() gives, in a matrix-vector product
        n = len(self.labels)
        counts = np.empty((int(cfg.bootstrap), n), dtype=np.float32)  # exact: small integers
        row = 0
        for idx in resample_indices(n, int(cfg.bootstrap), int(cfg.seed)):  # the resamples `zeroshot prompts` draws
            flat = (np.arange(len(idx))[:, None] * n + idx).ravel()
            counts[row:row + len(idx)] = np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n)
            row += len(idx)
        self._counts = torch.from_numpy(counts)  # torch's matrix-vector product: 20x numpy's here
        self._baselines: dict[tuple, np.ndarray] = {}
        self._memo: dict[tuple, tuple[torch.Tensor, int]] = {}

    def __repr__(self) -> str:
        return f"PromptLab({self.cfg.dataset.name}, {len(self.labels)} images, {len(self.classnames)} classes)"

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, int]:
        """Normalized features [P, D] and how many prompts went through the text encoder (the rest were cached)."""
        from zeroshot.classifier import encode_prompts

        known = self.text_cache.get(list(dict.fromkeys(prompts)))
        if len(known) == len(set(prompts)):  # all cached: no tokenizer, no model call
            return F.normalize(torch.stack([known[p] for p in prompts]), dim=-1), 0
        feats = encode_prompts(self.model, prompts, int(self.cfg.text_batch_size), False, self.text_cache)
        return feats, len(set(prompts)) - len(known)

    def class_features(self, prompts, weighting: str = "none") -> tuple[torch.Tensor, int, int]:
        """[C, D] class features of templates, class-specific texts or a PromptSet; the prompt and encoded counts.
        A set scored before is remembered whole (the last MEMO sets), so scoring it again costs one product."""
        key = (repr(prompts if not hasattr(prompts, "templates") else list(prompts.templates)), weighting)
        if key in self._memo:
            feats, n_prompts = self._memo[key]
            return feats, n_prompts, 0
        out = self._class_features(prompts, weighting)
        self._memo[key] = out[:2]
        while len(self._memo) > self.MEMO:
            self._memo.pop(next(iter(self._memo)))
        return out

    def _class_features(self, prompts, weighting: str) -> tuple[torch.Tensor, int, int]:
        from zeroshot.label_free import scale_and_bias, settings_from, weigh

        if isinstance(prompts, str):
            prompts = [prompts]
        if hasattr(prompts, "templates"):
            prompts = list(prompts.templates)
        if isinstance(prompts, dict):
            missing = [c for c in self.classnames if c not in prompts]
            if missing:
                raise PromptError(f"class-specific prompts lack {len(missing)} classes, e.g. {missing[0]!r}")
            prompts = [list(prompts[c]) for c in self.classnames]
        if prompts and all(isinstance(p, str) for p in prompts):  # templates x class names
            bad = [t for t in prompts if t.count("{}") != 1]
            if bad:
                raise PromptError(f"template {bad[0]!r} must hold exactly one '{{}}' where the class name goes")
            flat = [t.replace("{}", c) for t in prompts for c in self.classnames]
            feats, new = self._encode(flat)
            feats = feats.view(len(prompts), len(self.classnames), -1)  # [T, C, D]
            if weighting == "none":
                return F.normalize(feats.mean(dim=0), dim=-1), len(flat), new
            scale, bias = scale_and_bias(self.model)  # the variant and temperature the config's prompts.* keys set
            settings = dataclasses.replace(settings_from(self.cfg.prompts), weighting=weighting, subclasses=None)
            return weigh(settings, self.image, feats, scale, bias).class_features, len(flat), new
        if len(prompts) != len(self.classnames) or not all(isinstance(p, (list, tuple)) and p for p in prompts):
            raise PromptError(f"give templates (strings with '{{}}'), or one non-empty list of texts per class "
                              f"({len(self.classnames)} classes, in label order), or a dict {{class name: [texts]}}")
        if weighting != "none":
            raise PromptError("weighting applies to templates x class names, not to class-specific texts")
        flat = [p for texts in prompts for p in texts]
        owner = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor([len(p) for p in prompts]))
        feats, new = self._encode(flat)
        total = torch.zeros(len(prompts), feats.shape[1]).index_add_(0, owner, feats)
        return F.normalize(total, dim=-1), len(flat), new

    def _correct(self, class_feats: torch.Tensor) -> np.ndarray:
        return (self.image @ class_feats.t()).argmax(dim=1).eq(self.labels).numpy().astype(np.float64)

    def score(self, prompts, baseline: str | list | None = None, weighting: str = "none") -> LabResult:
        """Score templates (a string or list of strings with '{}'), class-specific texts (one list per class, or a
        dict by class name) or a PromptSet, optionally ZPE- or CARPRT-weighted; against `baseline` (default: the
        config's, "a photo of a {}.")."""
        from zeroshot.metrics.stats import percentile_ci, pvalue_of

        start = time.perf_counter()
        check_choice("prompts.weighting", weighting)
        feats, n_prompts, new = self.class_features(prompts, weighting)
        correct = self._correct(feats)
        baseline = self.cfg.baseline if baseline is None else baseline
        key = (repr(baseline),)
        if key not in self._baselines:
            self._baselines[key] = self._correct(self.class_features(baseline)[0])
        base = self._baselines[key]
        n, diff = len(correct), correct - base
        # both resampled sums in one pass over the counts; integer sums, so exact in fp32
        sums = (self._counts @ torch.from_numpy(np.stack([correct, diff], axis=1).astype(np.float32))).double().numpy()
        low, high = percentile_ci(sums[:, 0] / n)
        p = pvalue_of(sums[:, 1] / n, diff.mean())
        return LabResult(float(correct.mean()), float(low), float(high), float(p), float(base.mean()), str(baseline),
                         len(correct), n_prompts, new, weighting, time.perf_counter() - start)
