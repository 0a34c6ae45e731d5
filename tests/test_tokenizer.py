import json

import pytest
import torch

from zeroshot import tokenize
from zeroshot.models.tokenizer import Tokenizer, default_tokenizer
from conftest import shared_path

EDGE_CASES = [
    "a photo of a dog.",
    "Ünïcödé café naïve 日本語 😀 ñ",
    "&amp;lt;b&amp;gt; Tom &amp; Jerry &quot;quoted&quot;",
    "  lots \n\t of   white\u00a0space  ",
    "don't you'll I'M we've they'd she's it's",
    "Ã©mojis and mojibake â€œquotesâ€\x9d",
    "<|startoftext|> literal specials <|endoftext|>",
    "numbers 1234567 and 3.14159",
    "",
    "a " * 40,
]


def test_vocabulary_size_and_specials():
    tok = default_tokenizer()
    assert len(tok) == 49408
    assert (tok.sot_token, tok.eot_token) == (49406, 49407)


def test_roundtrip_decode():
    tok = default_tokenizer()
    assert tok.decode(tok.encode("a photo of a golden retriever.")) == "a photo of a golden retriever ."


def test_matches_openai_on_edge_cases(openai_clip):
    ours = tokenize(EDGE_CASES, truncate=True)
    ref = openai_clip.tokenize(EDGE_CASES, truncate=True).long()
    assert torch.equal(ours, ref)


@pytest.mark.slow
def test_matches_openai_on_every_clip_benchmark_prompt(openai_clip):
    names = json.loads(shared_path("reference", "clip_benchmark_en_classnames.json").read_text())
    templates = json.loads(shared_path("reference", "clip_benchmark_en_templates.json").read_text())
    prompts = []
    for dataset, classnames in names.items():
        tmpl = templates.get(dataset, ["a photo of a {c}."])
        if isinstance(tmpl, dict):
            tmpl = [t for ts in tmpl.values() for t in ts]
        prompts += [t.replace("{c}", c) for c in classnames for t in tmpl]
    assert len(prompts) > 80_000
    ours = tokenize(prompts, truncate=True)
    ref = openai_clip.tokenize(prompts, truncate=True).long()
    mismatch = (ours != ref).any(dim=1).nonzero().flatten().tolist()
    assert not mismatch, [prompts[i] for i in mismatch[:5]]


def test_printable_ascii_skips_ftfy_and_unescaping_only_where_they_change_nothing():
    """clean()'s fast path (printable ASCII without '&') against the full cleaning, on every shipped template and
    class name and on every printable ASCII character in context."""
    import html
    import string
    from pathlib import Path

    import ftfy
    import regex

    from zeroshot.models.tokenizer import clean

    def full(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip().lower()

    texts = [f"{a} x{b}y {a}" for a in string.printable for b in string.printable[:95]]
    for f in (Path(__file__).parents[1] / "prompts").glob("*.json"):
        data = json.loads(f.read_text())
        texts += [t for v in data.values() if isinstance(v, list) for t in v if isinstance(t, str)]
    texts += EDGE_CASES + ["Tom &amp; Jerry", "a\x1b[31mred", "caf\u00e9", "line\r\nbreak", "\u201cquoted\u201d"]
    fast = [t for t in texts if t.isascii() and t.isprintable() and "&" not in t]
    assert len(fast) > 5000 and len(texts) - len(fast) > 10
    mismatch = [t for t in texts if clean(t) != full(t)]
    assert not mismatch, mismatch[:5]


def test_too_long_raises_naming_text_and_truncate():
    text = "word " * 100
    with pytest.raises(ValueError) as e:
        tokenize([text])
    assert "truncate=True" in str(e.value) and "word word" in str(e.value)


def test_truncate_keeps_eot_last():
    ids = tokenize(["word " * 100], context_length=16, truncate=True)
    assert ids.shape == (1, 16) and ids.dtype == torch.long
    assert ids[0, -1].item() == 49407 and ids[0, 0].item() == 49406


def test_single_string_and_padding():
    ids = tokenize("hi")
    assert ids.shape == (1, 77)
    assert ids[0, 3:].eq(0).all()


def test_custom_vocab_path_matches_default():
    assert Tokenizer().encode("hello world") == default_tokenizer().encode("hello world")
