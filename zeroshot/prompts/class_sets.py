"""From the `prompts.*` settings to the class-specific prompt sets a run uses: the one glue `evaluate` and
`zeroshot prompts` call (the keys and their defaults: configs/prompts/dataset.yaml).

- `main`: what `eval` classifies with: the descriptions; else WaffleCLIP's first seed; None without either
  (then the templates, as before).
- `descriptions`: the descriptions alone (for the experiments, also when `main` is WaffleCLIP beside them);
- `random`: label -> seed -> set: WaffleCLIP's random descriptors and the controls on the descriptions, for the
  experiments' mean and std over seeds.
Every set carries its hash (descriptions.class_prompts_hash) and its label `name#hash8`, so two description
files, or two settings of one file, are two report rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zeroshot.classifier import check_aggregate
from zeroshot.errors import PromptError
from zeroshot.prompts.descriptions import (
    class_prompts,
    class_prompts_hash,
    map_descriptions,
    prompts_label,
    read_descriptions,
)
from zeroshot.prompts.waffle import control_texts, waffle_texts
from zeroshot.settings import check_entries, check_prompt_sets, check_range

# The prompts.* keys this module reads; their defaults live in configs/prompts/dataset.yaml.
KEYS = ("descriptions", "descriptions_sha256", "descriptions_mode", "descriptor_pattern", "descriptions_extra_keys",
        "combine", "aggregate", "waffle", "waffle_with_descriptions", "seeds", "controls")


@dataclass
class ClassPromptSet:
    name: str
    prompts: list[list[str]]
    aggregate: str
    digest: str
    kind: str  # descriptions | waffle | control
    seed: int | None = None
    record: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return prompts_label(self.name, self.digest)


def settings(p) -> dict:
    """The class-prompt keys of a composed `prompts` config (or a dict with every key of KEYS)."""
    missing = [k for k in KEYS if k not in p]
    if missing:
        raise PromptError(f"the prompts config lacks {', '.join(missing)}: prompt configs inherit configs/prompts/dataset.yaml")
    out = {k: p[k] for k in KEYS}
    check_prompt_sets(out)  # the CLI checked these keys already (settings.py); a Python caller's are checked here
    out["seeds"] = [int(s) for s in out["seeds"]]
    out["controls"] = check_entries("prompts.controls", out["controls"])
    out["waffle"] = int(check_range("prompts.waffle", out["waffle"]) or 0)
    return out


def resolve_class_prompt_sets(p, classnames: list[str], templates: list[str], cache_root=None) -> dict:
    """{"main": the set eval uses, "descriptions": the descriptions' set, "random": {label: {seed: set}},
    "mapping": map_descriptions' summary}; None where there is none."""
    s = settings(p)
    aggregate = check_aggregate(s["aggregate"])
    mode, pattern, combine = s["descriptions_mode"], s["descriptor_pattern"], s["combine"]

    def make(name, texts, text_mode, kind, *, seed=None, extra=None, record=None):
        prompts = class_prompts(texts, classnames, templates, text_mode, pattern, combine)
        digest = class_prompts_hash(classnames, templates, prompts, mode=text_mode, pattern=pattern, combine=combine,
                                    aggregate=aggregate, extra=extra)
        return ClassPromptSet(name, prompts, aggregate, digest, kind, seed, record or {})

    main, described, random, mapping = None, None, {}, None
    own = None
    if s["descriptions"]:
        desc = read_descriptions(s["descriptions"], cache_root, s["descriptions_sha256"])
        mapped = map_descriptions(desc.texts, classnames, desc.source, s["descriptions_extra_keys"])
        mapping, own = mapped.summary(), mapped.texts
        record = {"descriptions_source": desc.source, "descriptions_sha256": desc.sha256, "descriptions_mode": mode,
                  "descriptor_pattern": pattern if mode == "descriptors" else None, "combine": combine,
                  "aggregate": aggregate, "mapping": mapping}
        main = described = make(desc.name, own, mode, "descriptions", extra={"source_sha256": desc.sha256}, record=record)
        for control in s["controls"]:
            random[f"{desc.name} {control}"] = {
                seed: make(f"{desc.name}-{control}-seed{seed}", control_texts(own, control, seed), mode, "control", seed=seed,
                           extra={"source_sha256": desc.sha256, "control": control, "seed": seed}) for seed in s["seeds"]}
    if s["waffle"]:
        with_own = bool(s["waffle_with_descriptions"])
        label = f"waffle{s['waffle']}" + ("+descriptors" if with_own else "")
        random[label] = {
            seed: make(f"{label}-seed{seed}",
                       waffle_texts(classnames, s["waffle"], seed, own if mode == "descriptors" else None, with_own),
                       "descriptors", "waffle", seed=seed,
                       extra={"waffle": s["waffle"], "seed": seed, "with_descriptions": with_own,
                              "source_sha256": main.record["descriptions_sha256"] if main else None},
                       record={"waffle": s["waffle"], "seed": seed, "waffle_with_descriptions": with_own,
                               "aggregate": aggregate, "descriptor_pattern": pattern,
                               "combine": combine})  # the run's record: its whole protocol
            for seed in s["seeds"]}
        if main is None or with_own:
            main = random[label][s["seeds"][0]]
    return {"main": main, "descriptions": described, "random": random, "mapping": mapping}
