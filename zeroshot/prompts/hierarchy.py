"""Label hierarchies for CHiLS: each class's subclasses, from a user's file or a built-in hierarchy, mapped onto
the dataset's classes by name (every class once, no unknown name) before any encoding.

A subclass file is JSON {class name: [subclass name, ...]}. Names are matched after case folding and with runs
of spaces, underscores and hyphens read as one space, so CIFAR-100's `large_man-made_outdoor_things` is the class
"large man-made outdoor things". Built in: `cifar100`, CIFAR-100's 20 coarse labels and their 100 fine labels
(zeroshot/reference/cifar100_hierarchy.json).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from zeroshot.errors import PromptError
from zeroshot.files import read_json
from zeroshot.paths import REFERENCE

BUILTIN = {"cifar100": REFERENCE / "cifar100_hierarchy.json"}


@dataclass
class Hierarchy:
    """Each class's subclass names, in the dataset's label order, flattened with each subclass's class."""

    source: str
    subclasses: list[list[str]]  # [C] lists

    @property
    def flat(self) -> list[str]:
        return [s for subs in self.subclasses for s in subs]

    @property
    def parent(self) -> list[int]:
        return [c for c, subs in enumerate(self.subclasses) for _ in subs]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.subclasses).encode()).hexdigest()


def norm(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", str(name).casefold()).strip()


def readable(name: str) -> str:
    """A label as a prompt reads it: underscores as spaces (`maple_tree` -> `maple tree`)."""
    return re.sub(r"_+", " ", name).strip()


def read_mapping(spec: str) -> tuple[dict, str]:
    """{class: [subclasses]} and where it came from: a built-in name or a JSON file."""
    if spec in BUILTIN:
        doc = read_json(BUILTIN[spec], f"built-in hierarchy {spec}")
        return doc["hierarchy"], f"built-in {spec} ({BUILTIN[spec].name})"
    path = Path(spec)
    if not path.is_file():
        raise PromptError(f"prompts.subclasses={spec}: no such file and no built-in hierarchy of that name "
                          f"(built in: {', '.join(BUILTIN)}); give a JSON file {{class name: [subclass, ...]}}")
    data = read_json(path, f"Subclass file {path}")
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()):
        raise PromptError(f"Subclass file {path} must hold a JSON object {{class name: [subclass name, ...]}}")
    return data, str(path)


def resolve_hierarchy(spec: str, classnames: list[str]) -> Hierarchy:
    """The subclasses of every class in `classnames`, in that order; one line if a class is missing from the
    mapping, named twice, has no subclass, or the mapping names a class the dataset lacks."""
    mapping, source = read_mapping(spec)
    keyed: dict[str, list[str]] = {}
    for key, subs in mapping.items():
        if norm(key) in keyed:
            raise PromptError(f"{source} names the class {key!r} twice (names are matched ignoring case, '_' and '-')")
        keyed[norm(key)] = subs
    wanted = [norm(c) for c in classnames]
    missing = [c for c, k in zip(classnames, wanted) if k not in keyed]
    unknown = [k for k in mapping if norm(k) not in set(wanted)]
    if missing:
        raise PromptError(f"{source} gives no subclasses for {len(missing)} of the {len(classnames)} classes "
                          f"({', '.join(map(repr, missing[:5]))}{', ...' if len(missing) > 5 else ''}): add them to the file")
    if unknown:
        raise PromptError(f"{source} names {len(unknown)} classes this dataset lacks ({', '.join(map(repr, unknown[:5]))}"
                          f"{', ...' if len(unknown) > 5 else ''}): remove them or fix their spelling")
    empty = [c for c, k in zip(classnames, wanted) if not keyed[k]]
    if empty:
        raise PromptError(f"{source} gives the class {empty[0]!r} an empty list: every class needs at least one subclass")
    return Hierarchy(source, [[readable(s) for s in keyed[k]] for k in wanted])
