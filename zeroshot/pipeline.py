"""The shared pipeline every command runs on: the dataset built and checked, prompts and class names resolved
(ImageNet's on its shifts, class-specific prompts mapped), the model loaded (`prepare` -> `Setup`), image features
through the cache (sharded under torchrun) and the classifier weights; and eval's calibration numbers (ECE, NLL,
Brier and a fitted temperature: `calibration_features`, `calibrate`; the numbers themselves: metrics/calibration.py).
The settings were checked before any of this, once per command (settings.py, from the dispatch in cli.py).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from zeroshot import distributed as dist
from zeroshot.classifier import build_class_classifier, build_classifier, get_tokenizer, probability_kind
from zeroshot.classifier import logits as score
from zeroshot.data.base import EvalDataset, available_cores
from zeroshot.data.imagenet import IMAGENET_CLASSES, subset_positions
from zeroshot.data.readers import build_dataset
from zeroshot.data.subsets import keep_classes
from zeroshot.errors import ConfigError, DatasetError, PromptError
from zeroshot.features.cache import Features, ImageFeatureCache, TextCache, model_key
from zeroshot.features.extract import Encoding
from zeroshot.features.sharded import extract_features_sharded
from zeroshot.label_free import LabelFreeSettings, check_config
from zeroshot.log import log, plural
from zeroshot.metrics import calibration as cal
from zeroshot.models.loader import load_model
from zeroshot.models.precision import resolve_precision
from zeroshot.models.sources import check_name
from zeroshot.models.transforms import transform_spec
from zeroshot.paths import default_cache_dir
from zeroshot.prompts.class_sets import resolve_class_prompt_sets
from zeroshot.prompts.languages import LanguagePrompts, language_prompts
from zeroshot.prompts.sets import PromptSet, load_prompt_set, read_classnames


def resolve_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available here; use device=cpu or device=auto")
    return device


def cache_root(cfg: DictConfig) -> Path | None:
    if not cfg.cache:
        return None
    return Path(cfg.cache_dir or default_cache_dir())


def resolve_prompts(cfg: DictConfig, dataset: EvalDataset | None = None) -> PromptSet:
    """The prompt set: a named one, a file, or (`from_dataset`) the class names and templates a webdataset ships."""
    p = cfg.prompts
    name = p.name or cfg.dataset.prompts
    if name == "from_dataset" and not p.get("file"):
        templates = list(p.templates) if p.get("templates") else getattr(dataset, "shipped_templates", None)
        if not dataset or not dataset.classes or not templates:
            raise PromptError(f"Dataset {cfg.dataset.name!r} ships no {'class names' if not dataset or not dataset.classes else 'templates'} "
                              "to use as prompts: give prompts=NAME, prompts.file=FILE or prompts.templates='[...]'")
        from zeroshot.prompts.sets import check_templates

        custom = "_custom" if p.get("templates") else ""
        return PromptSet(f"{cfg.dataset.name}_shipped{custom}", check_templates(templates, f"{cfg.dataset.name}'s templates"),
                         list(dataset.classes), f"shipped with {cfg.dataset.get('root')}")
    return load_prompt_set(
        name=name,
        file=p.get("file"),
        templates=list(p.templates) if p.get("templates") else None,
        template_set=p.get("template_set"),
        templates_from=p.get("templates_from"),
    )


def resolve_classnames(cfg: DictConfig, pset: PromptSet, dataset: EvalDataset) -> list[str]:
    """Class names, by precedence: dataset.classnames file, the prompt set's own, the dataset's folder names.

    The count must equal the dataset's number of classes; this is checked here, before any encoding.
    """
    if cfg.dataset.get("classnames"):
        names, origin = read_classnames(cfg.dataset.classnames), f"class-names file {cfg.dataset.classnames}"
    elif pset.classnames:
        names, origin = pset.classnames, f"prompt set {pset.name!r}"
    elif dataset.classes:
        names, origin = [c.replace("_", " ") for c in dataset.classes], "the dataset's folder names"
    else:
        raise PromptError(
            f"Prompt set {pset.name!r} has no class names and dataset {cfg.dataset.name!r} does not name its classes; "
            "give them with dataset.classnames=FILE (one per line, in label order)"
        )
    expected = len(dataset.classes) if dataset.classes else cfg.dataset.get("num_classes")
    names = imagenet_names_for(cfg.dataset, names, dataset, origin)
    if expected is not None and len(names) != expected:
        raise PromptError(
            f"{origin} has {len(names)} class names but dataset {cfg.dataset.name!r} has {expected} classes. "
            "Use a prompt set or class-names file made for this dataset, in its label order."
        )
    if getattr(dataset, "shipped_templates", None) is not None and dataset.classes and names is not dataset.classes:
        check_shipped_order(cfg.dataset.name, names, dataset.classes, origin)
    intended = pset.duplicate_classnames if origin.startswith("prompt set") else []
    check_duplicate_names(names, origin, intended, bool(cfg.dataset.get("allow_duplicate_classnames")))
    return names


def name_key(name: str) -> str:
    """A class name as the comparison of names sees it: case and runs of spaces folded."""
    return " ".join(name.casefold().split())


def repeated_names(names: list[str]) -> dict[str, list[int]]:
    """{name: its labels} for each name given to two or more classes, compared by name_key."""
    labels: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        labels.setdefault(name_key(name), []).append(i)
    return {names[ls[0]]: ls for ls in labels.values() if len(ls) > 1}


def check_duplicate_names(names: list[str], origin: str, intended: list[str], allowed: bool) -> None:
    """Two classes with one name get one text embedding and split their votes: an error naming both labels, unless
    the user says it is intended (dataset.allow_duplicate_classnames=true) or the published list repeats the name
    itself (its prompt set's `duplicate_classnames`). Names are compared as the tokenizer sees them (case, spaces)."""
    intended_keys = set(map(name_key, intended))
    for name, labels in repeated_names(names).items():
        if allowed or name_key(name) in intended_keys:
            log.info("note: class name %r names labels %s (%s)", name, ", ".join(map(str, labels)),
                     "allowed by dataset.allow_duplicate_classnames" if allowed else f"as published in {origin}")
            continue
        raise PromptError(f"{origin} names two classes {name!r}: labels {labels[0]} and {labels[1]}. Two classes with "
                          "one name get one text embedding and split their votes; fix the names, or pass "
                          "dataset.allow_duplicate_classnames=true if this is intended")


def imagenet_names_for(d: DictConfig, names: list[str], dataset: EvalDataset, origin: str) -> list[str]:
    """ImageNet's 1000 class names (any of its prompt sets, or a user's own file) on a shift of ImageNet.

    ImageNet-A, -R and -O label a 200-wnid subset: the names at those wnids' positions, in the subset's
    order. ObjectNet's classes are its own (113 that map onto ImageNet), so it keeps its own names and takes
    only the set's templates. Any other count is left to the class-count check."""
    if len(names) != IMAGENET_CLASSES or d.get("num_classes") == IMAGENET_CLASSES:
        return names
    if d.get("subset") and d.subset != "imagenet":
        log.info("class names: %s's 1000 ImageNet names at %s's %d wnids", origin, d.name, d.num_classes)
        return [names[i] for i in subset_positions(d.subset)]
    if d.kind == "objectnet" and dataset.classes:
        log.info("class names: ObjectNet's own %d (an ImageNet class list does not name them); templates from %s",
                 len(dataset.classes), origin)
        return list(dataset.classes)
    return names


def check_shipped_order(dataset: str, names: list[str], shipped: list[str], origin: str) -> None:
    """A webdataset's classnames.txt fixes its label order: our names must name the same classes in that order.

    Wording may differ (OpenAI's names against CLIP_benchmark's); many differences mean another order."""
    import re

    def norm(s: str) -> str:
        return re.sub(r"[\s_/-]+", " ", s.casefold()).strip()

    differ = [(i, a, b) for i, (a, b) in enumerate(zip(names, shipped)) if norm(a) != norm(b)]
    if len(differ) > max(1, len(names) // 10):
        i, a, b = differ[0]
        raise PromptError(f"{origin} and the webdataset's classnames.txt disagree on {len(differ)} of {len(names)} classes "
                          f"(first at label {i}: {a!r} vs {b!r}): another label order. Use prompts=from_dataset for its own "
                          "names, or a class-names file in its order (dataset.classnames=FILE)")
    for i, a, b in differ:
        log.info("note: label %d of %s is %r in the webdataset, prompted as %r (%s)", i, dataset, b, a, origin)


IMAGENET_FAMILY = ("imagenet", "wnid_folders", "imagenetv2")  # dataset kinds labelled by ImageNet's classes


def imagenet_positions(d: DictConfig) -> list[int]:
    """Each label of an ImageNet-family dataset as an ImageNet label index (its shifts' subsets at their wnids)."""
    if d.kind not in IMAGENET_FAMILY:
        raise PromptError(f"prompts.language names ImageNet's classes: it applies to ImageNet and its shifts "
                          f"(imagenet, imagenetv2, imagenet_sketch, imagenet_a, imagenet_r, imagenet_o), not to dataset "
                          f"{d.name!r}. For another dataset give names in that language: dataset.classnames=FILE and "
                          "prompts.templates='[...]'")
    if d.get("subset") and d.subset != "imagenet":
        return subset_positions(d.subset)
    return list(range(IMAGENET_CLASSES))


def apply_language(cfg: DictConfig, dataset: EvalDataset, pset: PromptSet, lang: LanguagePrompts):
    """The dataset cut to the classes `lang` names (relabelled in the dataset's order), its names and templates.

    Returns (dataset, prompt set, class names, the record of the language and of what was left out)."""
    p, d = cfg.prompts, cfg.dataset
    clash = [k for k in ("file", "template_set") if p.get(k)] + (["dataset.classnames"] if d.get("classnames") else [])
    if clash:
        raise PromptError(f"prompts.language={p.language} brings its own class names and templates: drop "
                          f"{', '.join(clash)} (prompts.templates=[...] replaces the language's templates)")
    positions = imagenet_positions(d)
    if dataset.classes and len(dataset.classes) != len(positions):
        raise PromptError(f"dataset {d.name!r} holds {len(dataset.classes)} classes, expected {len(positions)}")
    named = dict(zip(lang.positions, lang.names))
    kept = [k for k, pos in enumerate(positions) if pos in named]
    if not kept:
        raise PromptError(f"{lang.source} names none of dataset {d.name!r}'s {len(positions)} classes in {lang.language!r}")
    why = f"prompts.language={lang.language} ({lang.source})"
    cut = keep_classes(dataset, kept, why) if len(kept) < len(positions) else None
    left = len(dataset) - len(cut.dataset) if cut else 0
    classnames = [named[positions[k]] for k in kept]
    log.info("%s: names %d of %s's %d classes; %d images of the other %d classes left out", why, len(kept), d.name,
             len(positions), left, len(positions) - len(kept))
    shared = repeated_names(classnames)
    if shared:  # translations that fold two classes into one word: scored as published (CLIP_benchmark does too)
        log.warning("%s: %d class names each name two or more classes, as published (e.g. %r: labels %s); those "
                    "classes share one text embedding and split their votes, as in the published protocol", why,
                    len(shared), *next(iter(shared.items())))
    out = PromptSet(f"{pset.name}-{lang.tag}", lang.templates, classnames, lang.origin.get("names_from", lang.source))
    record = {**lang.record(), "n_classes_left_out": len(positions) - len(kept), "n_images_left_out": left,
              "repeated_names": {name: labels for name, labels in shared.items()}}
    return (cut.dataset if cut else dataset), out, classnames, record


def set_text_language(model, language: str | None) -> None:
    """Tell the text tower's tokenizer the run's language where it takes one (NLLB's FLORES-200 code), and warn
    where the tower reads English only."""
    from zeroshot.models.languages import apply_language_to_model

    apply_language_to_model(model, language)


def load_configured_model(m: DictConfig, device: torch.device, precision: str, cache_dir):
    """The model a `configs/model/*.yaml` (plus overrides) names: model.checkpoint, else model.name."""
    preprocess = OmegaConf.to_container(m.preprocess, resolve=True) if m.get("preprocess") else {}
    preprocess = {k: v for k, v in preprocess.items() if v is not None}
    return load_model(m.get("checkpoint") or m.name, device, precision, cache_dir, activation=m.get("activation"),
                      expect_arch=m.get("arch"), preprocess=preprocess or None, backend=m.get("backend"))


def feature_key(model, dataset: EvalDataset, split: str) -> dict:
    """Everything that determines the image features: the weights as built, the pixels, and which images."""
    fp = dataset.fingerprint()
    image_side = {k: v for k, v in model_key(model).items() if k != "text_language"}  # a tokenizer setting
    decoder = {"decoder": dataset.decoder} if dataset.decoder else {}  # fast_decode: other pixels, other features
    return {**image_side, "preprocess": transform_spec(model.transform), **decoder,
            "dataset_fingerprint": fp["digest"], "split": split, "n_images": len(dataset)}


@dataclass
class Setup:
    """What `prepare` checked and built: everything an evaluation or a prompt experiment needs."""

    model: torch.nn.Module
    dataset: EvalDataset
    prompts: PromptSet
    classnames: list[str]
    device: torch.device
    precision: str
    cache_root: Path | None
    class_prompts: dict | None = None  # prompts.class_sets.resolve_class_prompt_sets: descriptions, WaffleCLIP sets
    language: dict | None = None  # prompts.language: the language, its source, the classes and images left out
    label_free: LabelFreeSettings | None = None  # prompts.weighting / prompts.subclasses (label_free.py), when asked for
    label_free_identity: dict | None = None  # set once the label-free classifier is built: its method, settings, digest

    @property
    def main_class_prompts(self):
        """The class-specific prompt set the classifier is built from, or None (templates x class names)."""
        return (self.class_prompts or {}).get("main")


def runtime(cfg: DictConfig) -> tuple[torch.device, str]:
    """Seed and threads set, device and precision chosen, and the model's name checked (nothing is downloaded):
    what every command does before it reads any data."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    precision = resolve_precision(cfg.precision, device)
    check_name(cfg.model.checkpoint or cfg.model.name)
    return device, precision


def load_for(cfg: DictConfig, dataset: EvalDataset, device: torch.device, precision: str):
    """The configured model (once per node under torchrun), its preprocessing set on the dataset."""
    model = dist.local_rank_zero_first(lambda: load_configured_model(cfg.model, device, precision, cfg.cache_dir))
    dataset.transform = model.transform
    if cfg.fast_decode:
        use_fast_decode(model, dataset)
    return model


def use_fast_decode(model, dataset: EvalDataset) -> None:
    """fast_decode=true: JPEGs at least twice the model's input decode at a reduced DCT scale (data/base.py's
    DraftLoader). Where the source decodes its own images, or the model's input size is not known, the run says so
    and decodes exactly."""
    spec = getattr(model, "preprocess_spec", None)
    if spec is None:
        log.warning("fast_decode=true: this model's backend does its own preprocessing; images decode exactly")
    elif dataset.decode_at_least(spec.size):
        log.info("fast_decode=true: JPEGs of at least %d px a side decode at a reduced DCT scale (%s)",
                 2 * spec.size, dataset.decoder)
    else:
        log.warning("fast_decode=true: dataset %s decodes its own images (not through a file loader); they decode "
                    "exactly", dataset.name)


def prepare(cfg: DictConfig) -> Setup:
    # Inputs are checked first, so a bad name, template or data path fails before any download or encoding.
    device, precision = runtime(cfg)
    # under torchrun a download or an unpack happens once per node (local rank 0), while the others wait
    dataset = dist.local_rank_zero_first(lambda: build_dataset(cfg.dataset, None, cfg.skip_bad_images))
    pset = resolve_prompts(cfg, dataset)
    lang = language_prompts(cfg.prompts, cache_root(cfg))
    language = None
    if lang is None:
        classnames = resolve_classnames(cfg, pset, dataset)
    else:  # names and templates in another language: only the classes it names, and their images
        dataset, pset, classnames, language = apply_language(cfg, dataset, pset, lang)
    dataset.check_labels(len(classnames))
    # a descriptions file is read and mapped onto the label order before the model loads: a bad key fails first
    class_sets = resolve_class_prompt_sets(cfg.prompts, classnames, pset.templates, cache_root(cfg))
    label_free = check_config(cfg, pset.templates, classnames, bool((class_sets or {}).get("main")))
    model = load_for(cfg, dataset, device, precision)
    set_text_language(model, language["language"] if language else None)
    return Setup(model, dataset, pset, classnames, device, precision, cache_root(cfg), class_sets, language=language,
                 label_free=label_free)


def loader_policy(cfg: DictConfig, device: torch.device) -> tuple[int, str]:
    """(DataLoader workers, their priority): how the cores are split between decoding and the model.

    On the CPU (`worker_priority: auto` -> idle) the model keeps all its threads and one decoding worker per core
    (up to 8) runs at idle priority: a worker takes a core only while the model leaves it idle (waiting for a
    batch, or in its serial parts), so decoding and encoding share the cores without preempting each other.
    Measured on 2 cores with bf16 ViT-B/32 on full-size JPEGs (benchmarks/README.md, "Loader and model balance"),
    this reached 93-99% of what the two costs allow, where cores - 1 workers at normal priority, preempting the
    model's threads, reached 87-94%; on 32x32 and 224x224 images (decoding under 2% of the cost) both are at the
    bound within the machine's noise.
    On a GPU the cores only decode and feed it: cores - 1 workers (up to 8) at normal priority."""
    priority = cfg.worker_priority
    if priority == "auto":
        priority = "idle" if device.type == "cpu" else "normal"
    if cfg.num_workers not in (None, "auto"):
        return int(cfg.num_workers), priority
    cores = available_cores()
    return (min(8, cores) if priority == "idle" else max(1, min(8, cores - 1))), priority


def image_features(cfg: DictConfig, s: Setup, progress: bool = True, thumbnails=None) -> Features | None:
    """Features of the whole dataset (on rank 0; None on other ranks), through the cache unless cache=false.
    `thumbnails` (PIL image -> thumbnail): the loader also makes one of each image it decodes (features.step).

    A dataset none of whose images could be read is an error here, for every command that extracts features."""
    chunk_size = int(cfg.chunk_size)
    cache = None
    if s.cache_root is not None:
        cache = ImageFeatureCache(s.cache_root, feature_key(s.model, s.dataset, cfg.dataset.split), chunk_size)
    workers, priority = loader_policy(cfg, s.device)
    how = Encoding(cfg.batch_size, workers, s.device, chunk_size, progress, priority, thumbnails)
    feats = extract_features_sharded(s.model, s.dataset, cache, how, shards=cfg.dist_shards)
    if feats is not None and len(feats.labels) == 0:
        raise DatasetError(f"No readable images in dataset {cfg.dataset.name!r} ({feats.skipped} skipped as unreadable)")
    # (-1 is a multi-label image with no positive; retrieval has no classes: its labels are the images' own indices)
    if feats is not None and s.classnames and int(feats.labels.max()) >= len(s.classnames):
        row = int((feats.labels >= len(s.classnames)).nonzero()[0])
        raise DatasetError(f"{s.dataset.describe(int(feats.indices[row]))} has label {int(feats.labels[row])}, outside the "
                           f"{len(s.classnames)} classes of dataset {cfg.dataset.name!r}: fix the label or the class names")
    return feats


def caption_tokenizer(model):
    """The model's tokenizer, cutting over-long captions at the context length (end-of-text kept), as
    CLIP_benchmark's and DataComp's open_clip tokenizers do. A reference library's tokenizer already cuts."""
    from zeroshot.models.tokenizer import tokenize

    tok = get_tokenizer(model)
    if isinstance(tok, functools.partial) and tok.func is tokenize:
        return functools.partial(tok, truncate=True)
    return tok


def text_cache(s: Setup) -> TextCache | None:
    return TextCache(s.cache_root, model_key(s.model)) if s.cache_root is not None else None


def prompt_count(s: Setup) -> str:
    main = s.main_class_prompts
    if main is None:
        return plural(len(s.prompts.templates), "template")
    return f"{plural(sum(map(len, main.prompts)), 'class-specific prompt')}, {main.aggregate}"


def classifier_weights(cfg: DictConfig, s: Setup, progress: bool) -> torch.Tensor:
    """[D, C]: templates x class names (OpenAI's ensembling), or each class's own prompts (descriptions, WaffleCLIP)
    aggregated as the set says; under torchrun each rank encodes its share of the classes."""
    main = s.main_class_prompts
    if main is None:
        return dist.build_classifier_sharded(
            lambda names: build_classifier(s.model, names, s.prompts.templates, cfg.text_batch_size, progress, text_cache(s)),
            s.classnames)
    return dist.build_classifier_sharded(
        lambda classes: build_class_classifier(s.model, [main.prompts[c] for c in classes], main.aggregate,
                                               cfg.text_batch_size, progress, text_cache(s)),
        list(range(len(s.classnames))))


# ---------------------------------------------------------------- calibration (eval)
# `calibration:` in configs/eval.yaml. `calibration.temperature=fit` never fits on the images it scores. With
# `calibration.split=NAME` the temperature is fitted on another split of the dataset (e.g. train), read through
# the same pipeline and feature cache as the scored one (as the linear probe reads its train split), and the
# calibration numbers cover all scored images. With no split (image folders, CSVs, datasets that ship one split)
# a seeded `fraction` of the scored images is held out to fit on, and every calibration number, before and after,
# covers the remaining images only; accuracy metrics still cover all images, since no temperature changes an argmax.
# The settings themselves are checked with every other (settings.py: calibration.*).

def calibration_features(cfg: DictConfig, s: Setup):
    """(image features, dataset digest) of the calibration split (every rank takes part; None on other ranks), or
    None where no split is asked for."""
    c = cfg.calibration
    if c.temperature != "fit" or c.split is None:
        return None
    split_cfg = copy.deepcopy(cfg)
    with open_dict(split_cfg):
        split_cfg.dataset.split = c.split
    # as in prepare: under torchrun a download or an unpack happens once per node
    ds = dist.local_rank_zero_first(lambda: build_dataset(split_cfg.dataset, s.model.transform, cfg.skip_bad_images))
    if ds.fingerprint()["digest"] == s.dataset.fingerprint()["digest"]:
        raise DatasetError(f"calibration.split={c.split} of {cfg.dataset.name!r} holds the same images as the scored split "
                           f"{cfg.dataset.split!r}; name a split with other images, or set calibration.split=null")
    feats = image_features(split_cfg, dataclasses.replace(s, dataset=ds), cfg.progress)
    return (feats, ds.fingerprint()["digest"]) if feats is not None else None


def calibrate(cfg: DictConfig, model, weights, logits, labels: np.ndarray, *, targets: dict,
              held=None) -> tuple[dict, list]:
    """metrics.json's calibration entries, and the reliability curves [(label, probs, labels)] to draw. `held`:
    what calibration_features gave."""
    kind = probability_kind(model)
    record = {"probability": cal.PROBABILITY_NAMES[kind]}
    if "multilabel" in targets:  # several right classes per image: no single label to be calibrated against
        return {**record, "ece": None, "nll": None, "brier": None,
                "calibration": {"skipped": "multi-label images have no single true class"}}, []
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    c = cfg.calibration
    scored = np.arange(len(labels))
    info = {"n_bins": cal.N_BINS, "binning": "equal-width, top label", "temperature": None}
    if c.temperature == "fit":
        if held is not None:
            feats, digest = held
            fit_logits, fit_labels = score(model, feats.features, weights).numpy(), feats.labels.numpy()
            info["fit_on"] = {"split": c.split, "dataset_fingerprint": digest, "n_images": int(len(fit_labels))}
        else:
            fraction, seed = float(c.fraction), int(cfg.seed)
            fit, scored = cal.held_out_split(len(labels), fraction, seed)
            fit_logits, fit_labels = logits[fit], labels[fit]
            info["fit_on"] = {"held_out_fraction": fraction, "seed": seed, "n_images": int(len(fit)),
                              "note": "calibration numbers cover the other images only"}
        info["temperature"] = cal.fit_temperature(fit_logits, fit_labels, kind)
    before = cal.calibration_metrics(logits[scored], labels[scored], kind)
    info["n_images_scored"] = int(len(scored))
    curves = [("model's own", cal.probabilities(logits[scored], kind), labels[scored])]
    out = {**record, **before}
    if info["temperature"] is not None:
        after = cal.calibration_metrics(logits[scored], labels[scored], kind, info["temperature"])
        info.update({f"{k}_before": v for k, v in before.items()} | {f"{k}_after": v for k, v in after.items()})
        out["ece_temperature_scaled"] = after["ece"]
        curves.append((f"T = {info['temperature']:.3g}", cal.probabilities(logits[scored], kind, info["temperature"]),
                       labels[scored]))
        log.info("calibration: T=%.4g fitted on %s images; ECE %.2f%% -> %.2f%%", info["temperature"],
                 info["fit_on"]["n_images"], 100 * before["ece"], 100 * after["ece"])
    out["calibration"] = info
    return out, curves
