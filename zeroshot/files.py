"""Reading the text files users hand us (class names, templates, CSVs, JSON configs), with one clear error.

A file in another encoding (a class-names list saved as Latin-1 or UTF-16 by an editor) must not end in a bare
`'utf-8' codec can't decode byte ...` that names no file. UTF-8, with or without a byte-order mark, is read;
UTF-16 and UTF-32 with a byte-order mark are read too, since their BOM says what they are; anything else is a
`TextFileError` naming the file, the offending byte and its position, and how to convert it.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path

from .errors import TextFileError

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, what: str) -> str:
    """`data` as text: UTF-8 (BOM optional), or UTF-16/32 announced by their BOM; else a TextFileError."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TextFileError(
            f"{what} is not {encoding.upper().replace('-SIG', '')} text: byte 0x{data[e.start]:02x} on line {line} "
            f"(offset {e.start}) cannot be decoded. Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`)"
        ) from None


def read_text(path: str | Path, what: str | None = None) -> str:
    """The whole file as text; `what` names it in errors (default: the path)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(f"{what or path} cannot be read ({e.strerror or e})") from None
    return decode_text(data, what or str(path))


def read_json(path: str | Path, what: str | None = None):
    """A JSON file, with its encoding and syntax errors named on one line."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TextFileError(f"{what or path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
