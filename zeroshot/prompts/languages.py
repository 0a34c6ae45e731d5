"""ImageNet's class names and templates in another language (`prompts.language=fr`), from two sources:

- `clip_benchmark`: CLIP_benchmark's Arabic, Chinese, Italian and Japanese translations of all 1000 names and
  of its templates (MIT; shipped in zeroshot/reference/multilingual/ with the licence).
- `babel`: Babel-ImageNet's names (Geigle et al., ACL 2024) for 93 languages, each naming only a subset of the
  1000 classes (French 799), with OpenAI's templates machine-translated by NLLB for 90 of them. The names carry
  the BabelNet Non-Commercial License, so zeroshot never ships them: they are fetched at run time from their
  published location, pinned by sha256, through the verified cache, or read from a user's copy
  (prompts.babel_names=PATH, prompts.babel_templates=PATH).
`auto` takes CLIP_benchmark's where it has the language, Babel-ImageNet's otherwise.

A language's names come as (ImageNet label index, name) in ImageNet's label order; the classifier covers only
those classes and the images of the others are left out (data/subsets.py), as CLIP_benchmark's
`babel_imagenet` does. Templates are used verbatim, duplicates and the translation's spacing included, as
CLIP_benchmark uses them, so that a run compares with its numbers.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from zeroshot.errors import CheckpointError, PromptError
from zeroshot.files import read_json
from zeroshot.log import log
from zeroshot.paths import REFERENCE
from zeroshot.settings import CHOICES, check_choice

SOURCES = CHOICES["prompts.language_source"]
IMAGENET_CLASSES = 1000


@functools.lru_cache()
def facts() -> dict:
    """reference/multilingual.json: codes, the sources' languages, the pinned URLs."""
    return json.loads((REFERENCE / "multilingual.json").read_text(encoding="utf-8"))


@dataclass
class LanguagePrompts:
    """A language's class names (`positions[i]` is the ImageNet label index `names[i]` names) and templates."""

    language: str
    source: str
    positions: list[int]
    names: list[str]
    templates: list[str]
    origin: dict = field(default_factory=dict)  # where names and templates came from, with their sha256

    @property
    def tag(self) -> str:
        return f"{self.language}-{self.source}"

    def record(self) -> dict:
        return {"language": self.language, "language_source": self.source, "n_named_classes": len(self.positions),
                **self.origin}


def canonical(language: str) -> str:
    """The ISO 639-1 code zeroshot records: lower case, CLIP_benchmark's `cn`/`jp` as `zh`/`ja`."""
    code = str(language).strip().lower()
    return facts()["aliases"].get(code, code)


def is_english(language: str | None) -> bool:
    return language is None or canonical(language) == "en"


def coverage() -> dict[str, list[str]]:
    """Which languages each source names ImageNet's classes in."""
    f = facts()
    return {"clip_benchmark": sorted(f["clip_benchmark"]["files"]), "babel": list(f["babel"]["name_languages"])}


def coverage_line() -> str:
    cov = coverage()
    return (f"clip_benchmark names {', '.join(cov['clip_benchmark'])}; babel names {len(cov['babel'])} languages "
            f"({', '.join(cov['babel'])})")


def pick_source(language: str, source: str) -> str:
    """The source that names `language` (auto: CLIP_benchmark's where it has it), or a PromptError saying which
    sources cover which languages."""
    check_choice("prompts.language_source", source)
    cov = coverage()
    if source == "auto":
        source = "clip_benchmark" if language in cov["clip_benchmark"] else "babel"
    if language not in cov[source]:
        have = [s for s, langs in cov.items() if language in langs]
        fix = f" Source(s) with {language!r}: {', '.join(have)} (prompts.language_source=...)." if have else ""
        raise PromptError(f"prompts.language={language!r}: {source} has no ImageNet class names in that language.{fix} "
                          f"Languages by source: {coverage_line()}")
    return source


def clip_benchmark_prompts(language: str) -> LanguagePrompts:
    code = facts()["clip_benchmark"]["files"][language]
    key = facts()["clip_benchmark"]["key"]
    folder = REFERENCE / "multilingual"
    names = read_json(folder / f"{code}_classnames.json")[key]
    templates = read_json(folder / f"{code}_zeroshot_classification_templates.json")[key]
    # CLIP_benchmark writes {c} where zeroshot writes {}
    templates = check_language_templates([t.replace("{c}", "{}") for t in templates], f"CLIP_benchmark's {code} templates")
    if len(names) != IMAGENET_CLASSES:
        raise PromptError(f"CLIP_benchmark's {code} class names hold {len(names)} names, expected {IMAGENET_CLASSES}")
    return LanguagePrompts(language, "clip_benchmark", list(range(IMAGENET_CLASSES)), list(names), templates,
                           {"names_from": f"CLIP_benchmark {code}_classnames.json (MIT)",
                            "templates_from": f"CLIP_benchmark {code}_zeroshot_classification_templates.json (MIT)"})


def check_language_templates(templates: list[str], where: str) -> list[str]:
    """Each template needs exactly one `{}` and no other placeholder; duplicates are kept (CLIP_benchmark averages
    over them as they are, so repeated translations weigh more) and said."""
    if not templates:
        raise PromptError(f"{where} has no templates")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1 or re.findall(r"\{[^{}]*\}", t) != ["{}"]:
            raise PromptError(f"Template {t!r} in {where} must contain exactly one '{{}}' where the class name goes")
    repeats = len(templates) - len(set(templates))
    if repeats:
        log.info("%s: %d repeated template(s) kept, as CLIP_benchmark uses them", where, repeats)
    return list(templates)


def babel_file(kind: str, local: str | None, cache_root) -> tuple[Path, str]:
    """Babel-ImageNet's names or NLLB templates (`kind`: names | templates): the user's copy, else the pinned
    download (from the published location or a mirror's URL) through the verified cache. Returns (path, what to
    record as its origin)."""
    b = facts()["babel"]
    url, sha = b[f"{kind}_url"], b[f"{kind}_sha256"]
    key = f"prompts.babel_{kind}"
    if local and str(local).startswith(("http://", "https://")):
        url = str(local)  # a mirror: the same file, so the same pin
    elif local:
        path = Path(str(local)).expanduser()
        if not path.is_file():
            raise PromptError(f"{key}={local}: no such file (Babel-ImageNet's {Path(url).name}, published at {url})")
        return path, str(path)
    from zeroshot.files import download
    from zeroshot.paths import default_cache_dir

    folder = (Path(cache_root) if cache_root is not None else default_cache_dir()) / "multilingual"
    folder = folder / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        return download(url, sha, folder), url
    except CheckpointError as e:
        why = getattr(e.__cause__, "reason", None) or e.__cause__ or e
        raise PromptError(f"Could not fetch Babel-ImageNet's {Path(url).name} from {url} ({why}) and no verified copy "
                          f"is cached. If this machine is offline, fetch that file elsewhere and give its path: "
                          f"{key}=/path/to/{Path(url).name}") from e


def babel_prompts(language: str, names_file: str | None, templates_file: str | None, templates: list[str] | None,
                  cache_root=None) -> LanguagePrompts:
    """Babel-ImageNet's names for `language` with its NLLB templates (or the user's `templates`)."""
    from zeroshot.files import file_sha256

    path, origin = babel_file("names", names_file, cache_root)
    data = read_json(path, f"Babel-ImageNet names {path}")
    code = language.upper()
    if not isinstance(data, dict) or code not in data:
        raise PromptError(f"{path} has no Babel-ImageNet names for {language!r}: is it babel_imagenet.json? "
                          f"Languages by source: {coverage_line()}")
    positions, names = data[code]
    check_babel_names(positions, names, f"{path} [{code}]")
    record = {"names_from": origin, "names_sha256": file_sha256(path, cache_root)}
    if templates:
        record["templates_from"] = "prompts.templates"
        return LanguagePrompts(language, "babel", list(positions), list(names),
                               check_language_templates(list(templates), "prompts.templates"), record)
    tpath, torigin = babel_file("templates", templates_file, cache_root)
    tdata = read_json(tpath, f"NLLB templates {tpath}")
    if code not in tdata:
        have = facts()["babel"]["template_languages"]
        raise PromptError(f"Babel-ImageNet names {language!r} but its NLLB templates do not ({len(have)} languages: "
                          f"{', '.join(have)}): give templates in {language!r}, e.g. prompts.templates='[\"... {{}} ...\"]'")
    record.update(templates_from=torigin, templates_sha256=file_sha256(tpath, cache_root))
    return LanguagePrompts(language, "babel", list(positions), list(names),
                           check_language_templates(list(tdata[code]), f"NLLB templates [{code}]"), record)


def check_babel_names(positions, names, where: str) -> None:
    """Label indices within ImageNet's 1000, ascending, unique, and one name each."""
    if not (isinstance(positions, list) and isinstance(names, list) and len(positions) == len(names) and positions):
        raise PromptError(f"{where} is not [[ImageNet label indices], [names]] of equal length")
    if any(not isinstance(p, int) or not 0 <= p < IMAGENET_CLASSES for p in positions) or positions != sorted(set(positions)):
        raise PromptError(f"{where}: label indices must be unique, ascending and within 0..{IMAGENET_CLASSES - 1}")


def language_prompts(p, cache_root=None) -> LanguagePrompts | None:
    """The `prompts.language*` settings to names and templates; None where no language (or English from the
    set's own source) is asked for."""
    if p.get("language") in (None, ""):
        return None
    language, source = canonical(p.language), str(p.language_source)
    if language == "en" and source in ("auto", "clip_benchmark"):
        return None  # the prompt set's own English names and templates
    all_known = set(coverage()["clip_benchmark"]) | set(coverage()["babel"]) | {"en"}
    missing = all_known - set(coverage()["babel"])
    if language not in all_known:
        raise PromptError(f"Unknown prompts.language={p.language!r} for ImageNet. Available: {', '.join(sorted(all_known))} "
                          f"(clip_benchmark names {', '.join(coverage()['clip_benchmark'])}; babel names "
                          f"{'all but ' + ', '.join(sorted(missing)) if missing else 'every one'})")
    source = pick_source(language, source)
    if source == "clip_benchmark":
        out = clip_benchmark_prompts(language)
        if p.get("templates"):
            out.templates = check_language_templates(list(p.templates), "prompts.templates")
            out.origin["templates_from"] = "prompts.templates"
        return out
    return babel_prompts(language, p.get("babel_names"), p.get("babel_templates"),
                         list(p.templates) if p.get("templates") else None, cache_root)
