"""Prompt sets: class names in label order and templates with one `{}`, stored as data under prompts/."""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from zeroshot.errors import PromptError
from zeroshot.files import read_json, read_text
from zeroshot.paths import prompts_dir

PROMPTS_DIR = prompts_dir()



@dataclass
class PromptSet:
    name: str
    templates: list[str]
    classnames: list[str] = field(default_factory=list)
    source: str = ""
    # names the set's source itself repeats (OpenAI's ImageNet list: "missile", "sunglasses"), kept as published
    duplicate_classnames: list[str] = field(default_factory=list)


def prompts_hash(classnames: list[str], templates: list[str]) -> str:
    """sha256 of the class names and templates, in order: what a report row and the text side depend on."""
    import hashlib

    return hashlib.sha256(json.dumps({"classnames": list(classnames), "templates": list(templates)}).encode()).hexdigest()


def available_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.json"))


def check_templates(templates: list[str], where: str) -> list[str]:
    """Reject an empty pool or a template without exactly one `{}`; drop duplicates with a warning."""
    templates = list(templates)
    if not templates:
        raise PromptError(f"{where} has no templates. Give at least one, e.g. prompts.templates='[\"a photo of a {{}}.\"]'")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            hint = " (CLIP_benchmark writes {c}; zeroshot's templates use {})" if isinstance(t, str) and "{c}" in t else ""
            raise PromptError(f"Template {t!r} in {where} must contain exactly one '{{}}' where the class name goes{hint}.")
        stray = [m for m in re.findall(r"\{[^{}]*\}", t) if m != "{}"]
        if stray:  # nothing fills {place}: it would reach the text encoder as the literal characters
            raise PromptError(f"Template {t!r} in {where} has the placeholder {stray[0]} that nothing fills: only '{{}}' "
                              "(the class name) is filled. Remove it or write the words out.")
    unique = list(dict.fromkeys(templates))
    if len(unique) < len(templates):
        dupes = sorted({t for t in templates if templates.count(t) > 1})
        warnings.warn(f"{where}: removed {len(templates) - len(unique)} duplicate template(s): {dupes}")
    return unique


def read_classnames(path: str | Path) -> list[str]:
    """A class-names file: one name per line (.txt), or a JSON list / prompts file with "classnames"."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"Class-names file {path} does not exist (expected one class name per line, in label order).")
    if path.suffix == ".json":
        data = read_json(path, f"Class-names file {path}")
        names = data.get("classnames") if isinstance(data, dict) else data
    else:
        names = [line.strip() for line in read_text(path, f"Class-names file {path}").splitlines() if line.strip()]
    if not names or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PromptError(f"Class-names file {path} holds no class names (expected one name per line, in label order).")
    return names


def read_prompt_file(path: str | Path) -> PromptSet:
    """A prompts file: JSON {"templates": [...], "classnames": [...]?} or text with one template per line."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"Prompts file {path} does not exist.")
    if path.suffix == ".json":
        data = read_json(path, f"Prompts file {path}")
        if isinstance(data, list):
            data = {"templates": data}
        if not isinstance(data, dict):
            raise PromptError(f"Prompts file {path} holds a JSON {type(data).__name__}: expected "
                              '{"templates": [...], "classnames": [...]} or a list of templates')
        templates, classnames = data.get("templates", []), data.get("classnames", [])
        name, source = data.get("name", path.stem), data.get("source", str(path))
    else:
        templates = [line.rstrip("\n") for line in read_text(path, f"Prompts file {path}").splitlines() if line.strip()]
        classnames, name, source = [], path.stem, str(path)
    duplicates = list(data.get("duplicate_classnames", [])) if path.suffix == ".json" else []
    return PromptSet(name, check_templates(templates, f"prompts file {path}"), list(classnames), source, duplicates)


def load_prompt_set(
    name: str | None = None,
    file: str | Path | None = None,
    templates: list[str] | None = None,
    template_set: str | None = None,
    templates_from: str | None = None,
) -> PromptSet:
    """A named set from prompts/, or a file; `templates` replaces the templates; `template_set` picks a
    named subset the file offers (imagenet: openai_80, simple_7); `templates_from` takes another published
    set's templates (its class names are not used: the class names stay this set's, or the dataset's)."""
    if file:
        pset = read_prompt_file(file)
    else:
        if name not in available_prompt_sets():
            raise PromptError(f"Unknown prompt set {name!r}. Available: {', '.join(available_prompt_sets())} (or prompts.file=PATH)")
        pset = read_prompt_file(PROMPTS_DIR / f"{name}.json")
        if template_set:
            sets = json.loads((PROMPTS_DIR / f"{name}.json").read_text()).get("template_sets", {})
            if template_set not in sets:
                raise PromptError(f"Prompt set {name!r} has no template set {template_set!r}. {template_set_help(template_set)}")
            pset.templates = check_templates(sets[template_set], f"{name}:{template_set}")
            pset.name = f"{name}_{template_set}"
    if templates_from:
        if templates_from not in available_prompt_sets():
            raise PromptError(f"prompts.templates_from={templates_from!r} names no prompt set. Prompt sets with templates: "
                              f"{', '.join(s for s in available_prompt_sets() if _templates_of(s))}.")
        pset.templates = check_templates(_templates_of(templates_from), f"{templates_from}'s templates")
        pset.name = f"{templates_from}_templates"
    if templates:
        pset.templates = check_templates(list(templates), "prompts.templates")
        pset.name = f"{pset.name}_custom"
    return pset


def _templates_of(name: str) -> list[str]:
    return list(json.loads((PROMPTS_DIR / f"{name}.json").read_text()).get("templates") or [])


def template_set_help(asked: str) -> str:
    """Which sets offer named template subsets, and how to take a whole published set's templates instead."""
    offered = {s: list(json.loads((PROMPTS_DIR / f"{s}.json").read_text()).get("template_sets", {}))
               for s in available_prompt_sets()}
    lines = "; ".join(f"{s}: {', '.join(t)}" for s, t in offered.items() if t) or "none"
    hint = (f" To use the {asked} prompt set's templates with your own class names, pass prompts.templates_from={asked} "
            "instead." if asked in offered and _templates_of(asked) else "")
    return f"Named template sets are offered by {lines}.{hint}"


def write_prompt_file(path: str | Path, pset: PromptSet) -> None:
    doc = {"name": pset.name, "source": pset.source, "classnames": pset.classnames, "templates": pset.templates}
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
