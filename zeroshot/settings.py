"""The one home of the input checks on settings: the valid range or choices of every key, as data, and the few
rules between keys, checked once per command before any work starts (`check_settings`, called from the one
dispatch in zeroshot/cli.py).

`batch_size=0` used to end in "range() arg 3 must not be zero" minutes into a run; a negative `bootstrap` in
an empty quantile. RANGES: (kind, low, high, other allowed values, an example): kind `int` or `float`; bounds
are inclusive unless written `(value, OPEN)`; the other allowed values are e.g. null or "auto". CHOICES: the
values a key takes; LIST_CHOICES: the values each entry of a list takes. A key absent from a command's config
is skipped, so one table serves every command. Library functions that take one of these values as an argument
(classifier.aggregate_features, prompts.descriptions.class_prompts, ...) check it with `check_choice`, so a
Python caller gets the same message. Checks that need loaded data (a class-name count, a split's images) stay
where the data is read.
"""
from __future__ import annotations

from zeroshot.errors import ConfigError, DatasetError, PromptError, UserError

OPEN = "open"
# key: (kind, low, high, extra values allowed besides numbers, an example)
RANGES: dict[str, tuple] = {
    "batch_size": ("int", 1, None, (), "64"),
    "text_batch_size": ("int", 1, None, (), "256"),
    "num_workers": ("int", 0, None, ("auto",), "auto"),
    "threads": ("int", 1, None, (None,), "null"),
    "seed": ("int", None, None, (), "0"),
    "chunk_size": ("int", 1, None, (), "2048"),
    "dist_timeout_s": ("float", (0, OPEN), None, (), "600"),
    "bootstrap": ("int", 1, None, (), "1000"),
    "select_fraction": ("float", (0, OPEN), (1, OPEN), (), "0.5"),
    "max_selected": ("int", 1, None, (None,), "null"),
    "delta_threshold": ("float", 0, None, (), "2.0"),
    "tolerance": ("float", 0, None, (), "0.001"),
    "probe.val_fraction": ("float", (0, OPEN), (1, OPEN), (), "0.2"),
    "probe.max_iter": ("int", 1, None, (), "1000"),
    "probe.shots": ("int", 1, None, (None,), "16"),
    "gallery.per_class": ("int", 0, None, (), "8"),
    "gallery.max_images": ("int", 1, None, (), "2000"),
    "gallery.confusions": ("int", 0, None, (), "10"),
    "gallery.per_confusion": ("int", 0, None, (), "6"),
    "gallery.size": ("int", 16, 512, (), "112"),
    "calibration.fraction": ("float", (0, OPEN), (1, OPEN), (), "0.2"),
    "prompts.waffle": ("int", 0, None, (None,), "15"),  # WaffleCLIP's count of random descriptor pairs
    "prompts.weight_temperature": ("float", (0, OPEN), None, (), "1.0"),  # ZPE's and CARPRT's softmax (label_free.py)
}
CHOICES: dict[str, tuple] = {
    "dist_shards": ("balanced", "chunks"),
    "worker_priority": ("auto", "idle", "normal"),
    "dataset.ties": ("strict", "first"),  # image-caption selection: how a tie counts (metrics/compositionality.py)
    "fast_decode": (False, True),
    "launcher": (None, "basic", "joblib", "submitit_local", "submitit_slurm"),  # how a suite's jobs run (suite.py)
    "calibration.temperature": (None, "fit"),  # fit: a temperature fitted on images it never scores (pipeline.py)
    # class-specific prompts (configs/prompts/dataset.yaml; prompts/class_sets.py)
    "prompts.aggregate": ("embedding_mean", "score_mean"),
    "prompts.descriptions_mode": ("sentences", "descriptors"),  # CuPL: each text is a prompt; DCLIP: through a pattern
    "prompts.combine": ("replace", "add"),  # the descriptions alone, or pooled with the templates (CuPL's "CuPL + e")
    "prompts.descriptions_extra_keys": ("error", "ignore"),
    "prompts.language_source": ("auto", "clip_benchmark", "babel"),  # class names in another language (prompts/languages.py)
    # label-free prompt weighting (label_free.py)
    "prompts.weighting": ("none", "zpe", "carprt"),
    "prompts.zpe_normalize": ("mean", "none"),
    "prompts.carprt_relevance": ("mean", "max"),
}
LIST_CHOICES: dict[str, tuple] = {
    "prompts.controls": ("shuffled", "swapped"),  # the paper's controls on the descriptions (prompts/waffle.py)
}


def _bound(b) -> tuple[float | None, bool]:
    return (b[0], True) if isinstance(b, tuple) else (b, False)


def _describe(kind: str, low, high, extra) -> str:
    (lo, lo_open), (hi, hi_open) = _bound(low), _bound(high)
    bounds = [f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []
    bounds += [f"{'<' if hi_open else '<='} {hi}"] if hi is not None else []
    text = ("a whole number" if kind == "int" else "a number") + (" " + " and ".join(bounds) if bounds else "")
    if extra:
        text += " or " + " or ".join("null" if e is None else str(e) for e in extra)
    return text


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "keys") or part not in node:
            return KeyError
        node = node[part]
    return node


def _error(key: str) -> type[UserError]:
    return PromptError if key.startswith("prompts.") else ConfigError


def check_choice(key: str, value):
    """`value` if it is one of CHOICES[key], else the error that names the key, the value and the choices."""
    choices = CHOICES[key]
    if value not in choices:
        names = ("null" if c is None else str(c).lower() if isinstance(c, bool) else str(c) for c in choices)  # YAML's
        raise _error(key)(f"{key}={value!r} is not a choice: {', '.join(names)}")
    return value


def check_entries(key: str, values) -> list:
    """Each entry of a list setting checked against LIST_CHOICES[key]."""
    for v in values or []:
        if v not in LIST_CHOICES[key]:
            raise _error(key)(f"{key} entry {v!r} is not a choice: {', '.join(LIST_CHOICES[key])}")
    return list(values or [])


def check_settings(cfg) -> None:
    """Raise the UserError naming the first setting outside its range or choices, with the fix."""
    _check_ranges(cfg)
    for key in CHOICES:
        value = _get(cfg, key)
        if value is not KeyError:
            check_choice(key, value)
    for key in LIST_CHOICES:
        value = _get(cfg, key)
        if value is not KeyError:
            check_entries(key, value)
    for rule in RULES:
        rule(cfg)


def _check_ranges(cfg) -> None:
    for key in RANGES:
        value = _get(cfg, key)
        if value is not KeyError:
            check_range(key, value)


def check_range(key: str, value):
    """`value` if it is within RANGES[key], else the error that names the key, the value, the range and an example."""
    kind, low, high, extra, example = RANGES[key]
    if value in extra:
        return value
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (kind == "float" or float(value).is_integer())
    if ok:
        (lo, lo_open), (hi, hi_open) = _bound(low), _bound(high)
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        raise _error(key)(f"{key}={value!r} is out of range: it must be {_describe(kind, low, high, extra)} "
                          f"(e.g. {key}={example})")
    return value


# ---------------------------------------------------------------- rules between keys

def calibration_split(cfg) -> None:
    """calibration.temperature=fit with calibration.split=NAME: a split of the dataset, and not the scored one."""
    c = _get(cfg, "calibration")
    if c is KeyError or c.get("temperature") != "fit" or c.get("split") is None:
        return
    splits = cfg.dataset.get("splits") or {}
    if c.split not in splits:
        raise DatasetError(f"calibration.split={c.split} is not a split of dataset {cfg.dataset.name!r} "
                           f"(its splits: {', '.join(splits) or 'none'}); name one of them, or set calibration.split=null "
                           "to fit on a held-out fraction of the scored images")
    if c.split == cfg.dataset.split:
        raise DatasetError(f"calibration.split={c.split} is the split being scored: a temperature fitted on it would be "
                           "scored on its own images. Name another split, or set calibration.split=null to hold out a fraction")


def prompt_sets(cfg) -> None:
    p = _get(cfg, "prompts")
    if p is not KeyError and p is not None and "seeds" in p:  # prompt configs that inherit configs/prompts/dataset.yaml
        check_prompt_sets(p)
        check_label_free(p)


def check_label_free(p) -> None:
    """One label-free classifier at a time; also what label_free.settings_from checks the keys it is given with."""
    weighting, subclasses = p.get("weighting"), p.get("subclasses")
    if weighting not in (None, "none") and subclasses not in (None, ""):
        raise ConfigError(f"prompts.weighting={weighting} and prompts.subclasses={subclasses} are two classifiers: "
                          "choose one (set prompts.weighting=none or prompts.subclasses=null)")


def check_prompt_sets(p) -> None:
    """The class-specific prompt keys (a `prompts` config, or a dict of them) that only work together; also what
    prompts.class_sets checks the keys it is given with."""
    if not p["seeds"]:
        raise PromptError("prompts.seeds is empty: give at least one seed, e.g. prompts.seeds=[0]")
    if not p.get("descriptions") and (p.get("controls") or p.get("waffle_with_descriptions")):
        raise PromptError("prompts.controls and prompts.waffle_with_descriptions work on descriptions: give prompts.descriptions=FILE")
    if p.get("waffle_with_descriptions") and p.get("descriptions_mode") != "descriptors":
        raise PromptError("prompts.waffle_with_descriptions puts random descriptors beside each class's descriptors: "
                          "set prompts.descriptions_mode=descriptors")


RULES = (calibration_split, prompt_sets)
