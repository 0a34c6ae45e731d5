"""WaffleCLIP's random descriptors (Roth et al., ICCV 2023) and the paper's controls on real descriptors.

The construction follows the description in WaffleCLIP's paper and code (ExplainableML/WaffleCLIP, method
`waffle`), written here from that description. N pairs, each of
- a random-word descriptor: `n_words` words drawn at random from a word list, each cut to its first `word_length`
  characters, joined by spaces; `n_words` is the rounded mean number of words in the class names (at least 1),
  `word_length` the rounded mean of each class name's mean word length;
- a random-character descriptor: `groups` groups of random characters joined by ", ", where `groups` is the
  rounded mean number of spaces in the class names plus one, and the characters number ceil(mean over class
  names of the longest word's length), raised to the next multiple of `groups` above it (the paper's code adds
  `groups - n % groups`, a full extra group's worth when n is already a multiple: kept), split evenly.
Characters are drawn from those in the dataset's descriptors, commas and periods removed, as the paper's code
does; without descriptors, from `FALLBACK_CHARACTERS`. The same 2N descriptors serve every class. Each is composed
through the descriptor pattern (DCLIP's "which (is/has/etc)" verb included), and scored by `score_mean`.
Results are reported as mean and population std (ddof=0, as the paper's code) over seeds; WaffleCLIP used 7.

Differences, by necessity: the paper's word list (word_list.pkl) is not redistributed here; `words()` derives
one from CLIP's BPE vocabulary, which zeroshot ships (MIT, zeroshot/LICENSE-CLIP-BPE): every whole-word token of
4-15 ASCII letters, in vocabulary order, 30-odd thousand words. The random draws are numpy's default_rng(seed),
so a seed gives the same descriptors on every machine, but not the paper's.
"""
from __future__ import annotations

import gzip
import math
import re
import string
from functools import lru_cache

import numpy as np

from zeroshot.errors import PromptError
from zeroshot.settings import LIST_CHOICES, check_entries

FALLBACK_CHARACTERS = string.ascii_lowercase + string.digits
CONTROLS = LIST_CHOICES["prompts.controls"]
WORD_RE = re.compile(r"[a-z]{4,15}")


@lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """Random-word source: the whole-word tokens of CLIP's BPE vocabulary that are 4-15 ASCII letters."""
    from zeroshot.models.tokenizer import N_MERGES, VOCAB_PATH

    with gzip.open(VOCAB_PATH, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1: N_MERGES + 1]  # line 0 is a version header
    out = []
    for line in merges:
        token = "".join(line.split())
        if token.endswith("</w>") and WORD_RE.fullmatch(token[:-4]):
            out.append(token[:-4])
    return tuple(dict.fromkeys(out))


def shape_of_names(classnames: list[str]) -> dict:
    """The descriptor sizes WaffleCLIP derives from the class names (see the module docstring)."""
    split = [c.replace("_", " ").split(" ") for c in classnames]
    n_words = max(1, round(float(np.mean([len(s) for s in split]))))
    word_length = round(float(np.mean([np.mean([len(w) for w in s]) for s in split])))
    groups = round(float(np.mean([c.count(" ") for c in classnames]))) + 1
    n_chars = math.ceil(float(np.mean([max(len(w) for w in s) for s in split])))
    n_chars += groups - n_chars % groups
    return {"n_words": n_words, "word_length": max(1, word_length), "groups": groups, "group_length": n_chars // groups}


def characters_of(descriptors: list[str] | None) -> str:
    if not descriptors:
        return FALLBACK_CHARACTERS
    chars = sorted(set("".join(descriptors).replace(",", "").replace(".", "").replace(" ", "")))
    return "".join(chars) or FALLBACK_CHARACTERS


def random_descriptors(classnames: list[str], n: int, seed: int, descriptors: list[str] | None = None) -> list[str]:
    """2n descriptors, a random-word one then a random-character one per pair, deterministic per seed."""
    if int(n) < 1:
        raise PromptError(f"prompts.waffle={n}: give the number of random descriptor pairs, at least 1 (WaffleCLIP used 15)")
    shape, vocab, chars = shape_of_names(classnames), words(), characters_of(descriptors)
    rng = np.random.default_rng(int(seed))
    out = []
    for _ in range(int(n)):
        picked = rng.integers(0, len(vocab), shape["n_words"])
        out.append(" ".join(vocab[i][: shape["word_length"]] for i in picked))
        drawn = rng.integers(0, len(chars), shape["groups"] * shape["group_length"])
        letters = "".join(chars[i] for i in drawn)
        L = shape["group_length"]
        out.append(", ".join(letters[g * L: (g + 1) * L] for g in range(shape["groups"])))
    return out


def waffle_texts(classnames: list[str], n: int, seed: int, own: list[list[str] | None] | None = None,
                 with_own: bool = False) -> list[list[str] | None]:
    """Per-class descriptor lists: the same random descriptors for every class, after the class's own
    descriptors when `with_own` (WaffleCLIP + GPT descriptors). A class `own` cannot address (None) stays None."""
    pool = [d for texts in (own or []) if texts for d in texts]
    shared = random_descriptors(classnames, n, seed, pool)
    if not with_own:
        return [list(shared) for _ in classnames]
    if own is None:
        raise PromptError("WaffleCLIP beside the class's own descriptors needs prompts.descriptions=FILE")
    return [None if texts is None else list(texts) + shared for texts in own]


def control_texts(own: list[list[str] | None], control: str, seed: int) -> list[list[str] | None]:
    """The paper's controls on real descriptors, deterministic per seed; classes without a list (None) are left out.
    - `shuffled`: all classes' descriptors pooled, permuted, and dealt back, each class keeping its count;
    - `swapped`: the classes' lists permuted among the classes (a plain permutation, as WaffleCLIP's
      `swapped_descriptions`: a class may draw its own list)."""
    check_entries("prompts.controls", [control])
    rng = np.random.default_rng(int(seed))
    have = [i for i, t in enumerate(own) if t is not None]
    out = [None if t is None else list(t) for t in own]
    if control == "swapped":
        for i, j in zip(have, rng.permutation(have)):
            out[i] = list(own[int(j)])
        return out
    pool = [d for i in have for d in own[i]]
    order = rng.permutation(len(pool))
    start = 0
    for i in have:
        k = len(own[i])
        out[i] = [pool[j] for j in order[start: start + k]]
        start += k
    return out
