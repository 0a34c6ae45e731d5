"""A run's language on the text side: NLLB-CLIP's tokenizer takes the source language as a FLORES-200 code
(as CLIP_benchmark's `set_language` sets it before a run), and a model whose text tower reads English only
is warned about by name when the prompts are in another language.

The code is kept on the model (`text_language`), and features.model_key includes it: the same prompt text
tokenized under two language codes is two texts for the text cache.
"""
from __future__ import annotations

import functools
import json
import re

from zeroshot.errors import ConfigError
from zeroshot.log import log
from zeroshot.paths import REFERENCE


@functools.lru_cache()
def _facts() -> dict:
    return json.loads((REFERENCE / "multilingual.json").read_text(encoding="utf-8"))


def flores_code(language: str) -> str:
    """ISO 639-1 (or CLIP_benchmark's cn/jp) -> FLORES-200, as NLLB's tokenizer takes it; a FLORES code passes."""
    if re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", language):
        return language
    code = _facts()["aliases"].get(language.lower(), language.lower())
    table = _facts()["flores"]
    if code not in table:
        raise ConfigError(f"no FLORES-200 code known for language {language!r} (NLLB's tokenizer needs one): give the "
                          f"FLORES code itself (e.g. fra_Latn), or one of: {', '.join(sorted(table))}")
    return table[code]


def hf_tokenizer(model):
    """The transformers tokenizer under the model's `tokenize` (open_clip's HFTokenizer, HFTokenize), or None."""
    tokenize = getattr(model, "tokenize", None)
    inner = getattr(tokenize, "built", lambda: tokenize)() if tokenize is not None else None
    for obj in (inner, getattr(inner, "tokenizer", None)):
        if callable(getattr(obj, "set_src_lang_special_tokens", None)):
            return obj
    return None


def set_source_language(tok, code: str) -> None:
    """Make `tok` (NLLB's) prefix every text with `code`, and check that it does. transformers 5 re-applies its
    `src_lang` on every call, so set_src_lang_special_tokens alone (what CLIP_benchmark's set_language and
    open_clip's HFTokenizer.set_language call) is undone at the next call: the property is set where there is one."""
    if code not in tok.get_vocab():
        raise ConfigError(f"the text tokenizer has no language code {code!r} (NLLB's FLORES-200 codes): "
                          "give another language, or its FLORES code")
    if isinstance(getattr(type(tok), "src_lang", None), property):
        tok.src_lang = code
    else:
        tok.set_src_lang_special_tokens(code)
    probe = tok(["a"]).input_ids[0]
    if tok.convert_tokens_to_ids(code) not in probe:
        raise RuntimeError(f"setting the tokenizer's language to {code} did not reach its output ({probe})")


def is_multilingual(model) -> bool:
    names = [getattr(model, "architecture", ""), str(getattr(getattr(model, "identity", None), "label", "")),
             str(getattr(getattr(model, "identity", None), "architecture", ""))]
    inner_cfg = getattr(getattr(model, "inner", None), "text", None)
    names.append(str(getattr(getattr(inner_cfg, "config", None), "_name_or_path", "")))
    text = " ".join(names).lower()
    return any(marker in text for marker in _facts()["multilingual_markers"])


def apply_language_to_model(model, language: str | None) -> None:
    """Set the tokenizer's language where it takes one; warn where the text tower is English-only."""
    if language is None:
        return
    tok = hf_tokenizer(model)
    if tok is not None:
        code = flores_code(language)
        set_source_language(tok, code)
        model.text_language = code
        log.info("text tokenizer language: %s (%s)", code, language)
        return
    if language != "en" and not is_multilingual(model):
        label = getattr(getattr(model, "identity", None), "label", None) or getattr(model, "architecture", type(model).__name__)
        log.warning("model %s: its text tower reads English only (nothing marks it multilingual), and the text is "
                    "in %r: expect scores near chance. Multilingual towers: open_clip's xlm-roberta-*, nllb-clip-*, "
                    "*SigLIP-i18n*, *SigLIP2*", label, language)
