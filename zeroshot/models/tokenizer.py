"""CLIP's byte-level BPE tokenizer, token for token identical to OpenAI's SimpleTokenizer.

The vocabulary file `bpe_simple_vocab_16e6.txt.gz` ships next to this module
(MIT, OpenAI; see `zeroshot/LICENSE-CLIP-BPE`).
"""
from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path
from typing import Iterable

import ftfy
import regex
import torch

from zeroshot.paths import BPE_VOCAB

VOCAB_PATH = BPE_VOCAB
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # 48,894 merges + 512 byte symbols + 2 specials = 49,408 tokens

# Contractions, runs of letters, single digits, runs of other non-space symbols.
_SPLIT = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)


@functools.lru_cache()
def byte_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, so BPE never sees whitespace or control bytes.

    Printable Latin-1 bytes map to themselves; the other 68 are shifted past U+00FF in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}  # insertion order is vocabulary order
    for offset, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + offset)
    return table


def clean(text: str) -> str:
    """ftfy, HTML-unescape twice (doubly escaped web text is common), collapse whitespace, lowercase.

    Printable ASCII without '&' is what most prompts are, and there ftfy and unescaping change nothing (no
    mojibake, curly quotes, control characters, line breaks or entities to fix: tests/test_tokenizer.py checks it
    on every shipped prompt), so such text skips them: ftfy costs 0.1 ms a prompt, a tenth of a second for 1,000."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return regex.sub(r"\s+", " ", text.strip()).strip().lower()


class Tokenizer:
    def __init__(self, vocab_path: str | Path = VOCAB_PATH):
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
        self.byte_encoder = byte_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.merge_rank = {m: r for r, m in enumerate(merges)}
        self.sot_token, self.eot_token = self.encoder[SOT], self.encoder[EOT]
        self._bpe_cache: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}

    def __len__(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> list[str]:
        """Merge the symbols of one pre-token, lowest-ranked pair first, until no known pair is left."""
        if word in self._bpe_cache:
            return self._bpe_cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.merge_rank.get(pair, N_MERGES), pair) for pair in zip(parts, parts[1:])]
            best_rank, (left, right) = min(ranked, key=lambda rp: rp[0])
            if best_rank == N_MERGES:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._bpe_cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _SPLIT.findall(clean(text)):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[tok] for tok in self.bpe(word))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@functools.lru_cache()
def default_tokenizer() -> Tokenizer:
    return Tokenizer()


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """Tokenize one or more texts into a LongTensor [N, context_length], zero-padded.

    Each row is <|startoftext|> tokens... <|endoftext|>. With truncate=True an over-long text is cut
    and <|endoftext|> is kept as its last token, so encode_text still finds it by argmax.
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = default_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tok.sot_token, *tok.encode(text), tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                from zeroshot.errors import PromptError

                raise PromptError(
                    f"Text {text!r} is {len(ids)} tokens long, more than the context length {context_length}. "
                    "Shorten it, or pass truncate=True to cut it (end-of-text is kept as the last token)."
                )
            ids = ids[: context_length - 1] + [tok.eot_token]
        result[row, : len(ids)] = torch.tensor(ids)
    return result


class LazyTokenizer:
    """A reference library's tokenizer, built on first use: loading a model never needs it (or the network
    it may need), and a failure says which tokenizer and how to get it."""

    def __init__(self, build, what: str):
        self._build, self.what, self._tokenizer = build, what, None

    def __call__(self, texts) -> torch.Tensor:
        return self.built()(list(texts) if not isinstance(texts, str) else [texts])

    def built(self):
        """The library's tokenizer, built now if it was not yet."""
        if self._tokenizer is None:
            try:
                self._tokenizer = self._build()
            except Exception as e:  # offline, missing extra, unknown name: one clear line
                from zeroshot.errors import CheckpointError

                raise CheckpointError(f"could not load the tokenizer {self.what} ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:200] if str(e) else ''}); it comes from the Hugging Face "
                                      "Hub on first use: run once with internet, or set HF_HOME to a cache that has it") from None
        return self._tokenizer

    def __repr__(self) -> str:
        return f"LazyTokenizer({self.what})"


class NoTokenizer:
    """For a text tower whose tokenizer nothing names: the model still encodes token ids; prompts need the tokenizer."""

    def __init__(self, why: str):
        self.why = why

    def __call__(self, texts) -> torch.Tensor:
        from zeroshot.errors import CheckpointError

        raise CheckpointError(self.why)

    def __repr__(self) -> str:
        return "NoTokenizer()"
