"""Class-specific prompts (CuPL, DCLIP, WaffleCLIP): reading {class name: [text, ...]}, mapping it onto a
dataset's label order, composing prompts, and the identity of the result.

Mapping. A key names a class; it is matched, in this order:
1. `#<index>`: the class with that label index (0-based): the only way to address one of two classes
   that share a name (ImageNet's two "missile" and two "sunglasses" under OpenAI's names);
2. exactly, to a class name;
3. after normalisation (`normalize_name`: case, accents, spaces, underscores, hyphens and punctuation are
   ignored), so "aquarium_fish", "Aquarium Fish" and "apartment building (outdoor)" find their classes;
4. through the rename table `reference/description_renames.json` (other names for the same class, e.g.
   DCLIP's "eft" for OpenAI's "newt"), when the target is one of the class names.
Every class is matched by exactly one key. Keys matching nothing, classes matched by no key and classes matched
twice are one error that lists them with the closest names. A key that names a class name held by several
classes cannot say which: it is reported and dropped, and those classes fall back to the templates unless a
`#<index>` key addresses them. A class whose list is empty falls back to its name (`name_prompt`).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from zeroshot.errors import CheckpointError, PromptError
from zeroshot.files import decode_text
from zeroshot.log import log
from zeroshot.paths import REFERENCE
from zeroshot.settings import CHOICES, check_choice

MODES = CHOICES["prompts.descriptions_mode"]  # CuPL: each text is a prompt; DCLIP: each text goes through a pattern
COMBINE = CHOICES["prompts.combine"]  # the descriptions alone, or pooled with the template prompts (CuPL's "CuPL + e")
EXTRA_KEYS = CHOICES["prompts.descriptions_extra_keys"]
# DCLIP's composition as the paper writes it. "(is/has/etc)" is replaced by the verb DCLIP's code picks from the
# descriptor's first word (VERB_RULES). DCLIP's and WaffleCLIP's code put it inside "A photo of a ...":
DCLIP_PATTERN = "{c}, which (is/has/etc) {d}."
PAPER_CODE_PATTERN = "A photo of a {c}, which (is/has/etc) {d}."  # WaffleCLIP base_main.py defaults, 7a1b8ee
VERB_SLOT = "(is/has/etc)"
# (prefixes, verb), first match wins, else "has". Prefixes are plain string prefixes as in DCLIP's code, so
# any descriptor starting with the letter "a" reads "which is ..." ("antlers" too): kept, to compose the same text.
VERB_RULES = ((("a", "an"), "is"), (("has", "often", "typically", "may", "can"), ""), (("used",), "is"))
DEFAULT_VERB = "has"
RENAMES_PATH = REFERENCE / "description_renames.json"


# ---------------------------------------------------------------- reading

@dataclass
class Descriptions:
    """A descriptions file as read: keys in the file's order, texts stripped, empty strings dropped."""

    name: str
    source: str
    sha256: str
    texts: dict[str, list[str]]

    @property
    def n_texts(self) -> int:
        return sum(len(v) for v in self.texts.values())


def is_url(source: str) -> bool:
    return str(source).startswith(("http://", "https://"))


def fetch_descriptions(url: str, cache_root: str | Path | None = None, sha256: str | None = None) -> Path:
    """A URL's file in the verified download cache (one folder per URL, so two files of one name never clash);
    a cached copy is used without the network."""
    from zeroshot.files import download
    from zeroshot.paths import default_cache_dir

    root = (Path(cache_root) if cache_root is not None else default_cache_dir()) / "descriptions"
    folder = root / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        return download(url, sha256, folder)
    except CheckpointError as e:
        why = getattr(e.__cause__, "reason", None) or e.__cause__ or e
        name = Path(url).name or "descriptions.json"
        raise PromptError(f"Could not download descriptions {url} ({why}) and no verified copy is cached. If this machine "
                          f"is offline, fetch the file elsewhere and give its path: prompts.descriptions=/path/to/{name}") from e


def read_descriptions(source: str | Path, cache_root: str | Path | None = None, sha256: str | None = None) -> Descriptions:
    """A JSON object {class name: [text, ...]} from a path or an http(s) URL (through the download cache)."""
    source = str(source)
    path = fetch_descriptions(source, cache_root, sha256) if is_url(source) else Path(source).expanduser()
    if not path.is_file():
        raise PromptError(f"Descriptions file {path} does not exist (expected a JSON object {{class name: [text, ...]}}).")
    raw = path.read_bytes()
    text = decode_text(raw, f"Descriptions file {source}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptError(f"Descriptions file {source} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}.") from e
    shape = "expected a JSON object {class name: [text, ...]}"
    if not isinstance(data, dict) or not data:
        raise PromptError(f"Descriptions file {source} holds {type(data).__name__ if data else 'nothing'}: {shape}.")
    texts = {}
    for key, values in data.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise PromptError(f"Descriptions file {source}: the value of {key!r} is not a list of strings: {shape}.")
        texts[key] = [s for s in (v.strip() for v in values) if s]
    name = Path(source.split("?")[0]).stem if is_url(source) else path.stem
    return Descriptions(name, source, hashlib.sha256(raw).hexdigest(), texts)


# ---------------------------------------------------------------- mapping

def normalize_name(name: str) -> str:
    """What two spellings of one class name share: letters and digits, casefolded, without accents."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


@lru_cache(maxsize=1)
def renames() -> dict[str, str]:
    """The rename table: normalised key -> class name."""
    table = json.loads(RENAMES_PATH.read_text(encoding="utf-8"))["renames"]
    return {normalize_name(k): v["to"] for k, v in table.items()}


@dataclass
class Mapping:
    """Each class's texts in label order. `texts[i]` is None for a class the file cannot address (a shared
    name and no `#<index>` key): it falls back to the templates."""

    texts: list[list[str] | None]
    matched_by: dict[str, int] = field(default_factory=dict)  # exact / normalised / renamed / index
    respelled: list[tuple[str, str]] = field(default_factory=list)  # (key, class name) matched other than exactly
    unaddressable: list[int] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)  # keys naming a shared class name
    ignored_keys: list[str] = field(default_factory=list)  # keys for classes the dataset lacks (extra_keys=ignore)
    empty: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        return {"matched_by": dict(self.matched_by), "respelled": [list(p) for p in self.respelled],
                "unaddressable_classes": list(self.unaddressable), "dropped_keys": list(self.dropped_keys),
                "ignored_keys": list(self.ignored_keys), "classes_without_text": len(self.empty)}


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _closest(name: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"{name!r} (closest: {near[0]!r})" if near else repr(name)


def _name_index(classnames: list[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The labels of each class name, as spelled and normalised (a shared name lists several)."""
    exact: dict[str, list[int]] = {}
    normal: dict[str, list[int]] = {}
    for i, c in enumerate(classnames):
        exact.setdefault(c, []).append(i)
        normal.setdefault(normalize_name(c), []).append(i)
    return exact, normal


def _find(key: str, n_classes: int, exact: dict, normal: dict, table: dict) -> tuple[str | None, list[int] | None]:
    """How a key names classes ("index", "exact", "normalised", "renamed") and which; ("bad_index", None) for an
    index past the last label, (None, None) for no match."""
    if re.fullmatch(r"#\d+", key):
        i = int(key[1:])
        return ("bad_index", None) if i >= n_classes else ("index", [i])
    if key in exact:
        return "exact", exact[key]
    if normalize_name(key) in normal:
        return "normalised", normal[normalize_name(key)]
    if normalize_name(key) in table and table[normalize_name(key)] in exact:
        return "renamed", exact[table[normalize_name(key)]]
    return None, None


def _claims(texts: dict, classnames: list[str], exact: dict, normal: dict, out: Mapping) -> tuple[dict, list, list]:
    """Which keys claim each label (counted and noted in `out`), the keys that match no class, and bad indices."""
    table = renames()
    claims: dict[int, list[str]] = {}
    unmatched, bad_index = [], []
    for key in texts:
        how, target = _find(key, len(classnames), exact, normal, table)
        if how == "bad_index":
            bad_index.append(key)
        elif target is None:
            unmatched.append(key)
        elif len(target) > 1:
            out.dropped_keys.append(key)
        else:
            claims.setdefault(target[0], []).append(key)
            out.matched_by[how] += 1
            if how in ("normalised", "renamed"):
                out.respelled.append((key, classnames[target[0]]))
    return claims, unmatched, bad_index


def _problems(texts: dict, classnames: list[str], bad_index: list, unmatched: list, missing: list, twice: dict) -> list[str]:
    problems = []
    if bad_index:
        problems.append(f"{len(bad_index)} index key(s) past the last label {len(classnames) - 1}: {_listing(bad_index)}")
    if unmatched:
        problems.append(f"{len(unmatched)} key(s) match no class: {_listing([_closest(k, classnames) for k in unmatched])}")
    if missing:
        keys = list(texts)
        problems.append(f"{len(missing)} class(es) have no key: {_listing([_closest(classnames[i], keys) for i in missing])}")
    if twice:
        problems.append(f"{len(twice)} class(es) matched by several keys: "
                        f"{_listing([f'{classnames[i]!r} by {keys}' for i, keys in twice.items()])}")
    return problems


def _say(out: Mapping, classnames: list[str], source: str) -> None:
    """What the mapping decided that the file did not say outright (also in metrics.json)."""
    if out.respelled:  # which class a key means was decided by spelling rules
        log.info("%s: %d key(s) matched a class by normalised spelling or the rename table, e.g. %s", source,
                 len(out.respelled), _listing([f"{k!r} -> {c!r}" for k, c in out.respelled[:5]]))
    if out.unaddressable:
        log.warning("%s: %d class(es) share a name with another class and have no \"#<index>\" key, so they use "
                    "the templates: %s (dropped keys: %s)", source, len(out.unaddressable),
                    _listing([f"#{i} {classnames[i]}" for i in out.unaddressable]), out.dropped_keys)
    if out.ignored_keys:
        log.warning("%s: ignored %d key(s) for classes this dataset lacks: %s", source,
                    len(out.ignored_keys), _listing(out.ignored_keys))
    if out.empty:
        log.warning("%s: %d class(es) have no text and fall back to their name", source, len(out.empty))


def map_descriptions(texts: dict[str, list[str]], classnames: list[str], source: str = "descriptions",
                     extra_keys: str = "error") -> Mapping:
    """Map the keys of {class name: [text, ...]} onto `classnames` (label order); see the module docstring."""
    check_choice("prompts.descriptions_extra_keys", extra_keys)
    exact, normal = _name_index(classnames)
    out = Mapping([None] * len(classnames), {"exact": 0, "normalised": 0, "renamed": 0, "index": 0})
    claims, unmatched, bad_index = _claims(texts, classnames, exact, normal, out)
    shared = {i for ids in list(exact.values()) + list(normal.values()) if len(ids) > 1 for i in ids}
    missing = [i for i in range(len(classnames)) if i not in claims and i not in shared]
    twice = {i: keys for i, keys in claims.items() if len(keys) > 1}
    if extra_keys == "ignore":
        out.ignored_keys, unmatched = unmatched, []
    problems = _problems(texts, classnames, bad_index, unmatched, missing, twice)
    if problems:
        raise PromptError(f"Descriptions {source} do not map onto the {len(classnames)} class names: {'; '.join(problems)}. "
                          "Use the class names of the prompt set (prompts/<name>.json, in label order), key a class by "
                          "label as \"#<index>\", or set prompts.descriptions_extra_keys=ignore to drop keys for classes "
                          "this dataset does not have.")
    for i, (key,) in claims.items():
        out.texts[i] = list(texts[key])
        if not texts[key]:
            out.empty.append(i)
    out.unaddressable = sorted(i for i in shared if i not in claims)
    out.empty.sort()
    _say(out, classnames, source)
    return out


# ---------------------------------------------------------------- composing

def check_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or pattern.count("{c}") != 1 or pattern.count("{d}") != 1:
        raise PromptError(f"Descriptor pattern {pattern!r} must hold '{{c}}' (the class name) and '{{d}}' (the descriptor) "
                          f"once each, e.g. prompts.descriptor_pattern='{DCLIP_PATTERN}'")
    return pattern


def verb_for(descriptor: str) -> str:
    for prefixes, verb in VERB_RULES:
        if descriptor.startswith(prefixes):
            return verb
    return DEFAULT_VERB


def compose(pattern: str, classname: str, descriptor: str) -> str:
    """One DCLIP prompt: the pattern with the class name, the descriptor and DCLIP's verb."""
    text = pattern
    if VERB_SLOT in text:
        verb = verb_for(descriptor)
        text = text.replace(VERB_SLOT, verb) if verb else text.replace(VERB_SLOT + " ", "").replace(VERB_SLOT, "")
    return text.replace("{c}", classname).replace("{d}", descriptor)


def name_prompt(pattern: str | None, classname: str) -> str:
    """A class with no text: the pattern without its descriptor part (the text between the two slots and the
    `{d}` slot itself), so "a photo of a {c}, which (is/has/etc) {d}." gives "a photo of a cat."; in sentences
    mode (no pattern), the bare name."""
    if pattern is None:
        return classname
    c, d = pattern.index("{c}"), pattern.index("{d}")
    text = pattern[: c + 3] + pattern[d + 3:] if c < d else pattern[:d] + pattern[c:]
    return text.replace("{c}", classname)


def class_prompts(mapping: Mapping | list[list[str] | None], classnames: list[str], templates: list[str],
                  mode: str = "sentences", pattern: str = DCLIP_PATTERN, combine: str = "replace") -> list[list[str]]:
    """Each class's prompts, in label order: its texts (sentences, or descriptors through `pattern`), a class
    with none gets its name (`name_prompt`), a class the file cannot address gets the templates; with
    combine=add the template prompts join every class's texts."""
    check_choice("prompts.descriptions_mode", mode)
    check_choice("prompts.combine", combine)
    if mode == "descriptors":
        check_pattern(pattern)
    texts = mapping.texts if isinstance(mapping, Mapping) else mapping
    if len(texts) != len(classnames):
        raise PromptError(f"{len(texts)} per-class text lists for {len(classnames)} class names")
    out = []
    for c, own in zip(classnames, texts):
        filled = [t.replace("{}", c) for t in templates]
        if own is None:
            out.append(filled)
            continue
        if not own:
            prompts = [name_prompt(pattern if mode == "descriptors" else None, c)]
        elif mode == "descriptors":
            prompts = [compose(pattern, c, d) for d in own]
        else:
            prompts = list(own)
        out.append(prompts + filled if combine == "add" else prompts)
    return out


# ---------------------------------------------------------------- identity

def class_prompts_hash(classnames: list[str], templates: list[str], prompts: list[list[str]], *, mode: str,
                       pattern: str | None, combine: str, aggregate: str, extra: dict | None = None) -> str:
    """sha256 of everything a class-specific classifier depends on: the names, the templates, each class's
    final prompts, and the settings that made them (extra: e.g. WaffleCLIP's count, seed and controls)."""
    doc = {"classnames": list(classnames), "templates": list(templates), "class_prompts": [list(p) for p in prompts],
           "mode": mode, "pattern": pattern if mode == "descriptors" else None, "combine": combine,
           "aggregate": aggregate, "extra": extra or {}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def prompts_label(name: str, digest: str) -> str:
    """Report label of a description set: its file name and the hash's first 8."""
    return f"{name}#{digest[:8]}"
