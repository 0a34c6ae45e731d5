"""The `zeroshot` logger: every message the package prints goes through it, so users can silence or redirect them.

A message is one line, `zeroshot: ...`, on stderr (the stream of the moment, so redirections and pytest's
capture see it). The level is ZEROSHOT_LOG_LEVEL (default INFO); a command's `-q` keeps only warnings and
errors; `logging.getLogger("zeroshot")` takes handlers and levels like any other logger. What a run assumed
(an activation, a preprocessing) is a warning, so it shows at every level but ERROR: it is never silent by default.
Results (a run's summary line, a report's table) are the commands' output on stdout, not messages.
"""
from __future__ import annotations

import logging
import os
import sys


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a message is written."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("zeroshot: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):  # logging.StreamHandler sets it at creation; the live sys.stderr is used instead
        pass


log = logging.getLogger("zeroshot")
if not any(isinstance(h, _Stderr) for h in log.handlers):
    log.addHandler(_Stderr())
    log.propagate = False  # one line per message, whatever the root logger (Hydra's, an application's) does
log.setLevel(getattr(logging, os.environ.get("ZEROSHOT_LOG_LEVEL", "INFO").upper(), logging.INFO))


def setup(quiet: bool = False) -> None:
    """The CLI's level: -q keeps warnings and errors only."""
    if quiet:
        log.setLevel(logging.WARNING)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 template`, `2 templates` (`words` where the plural is not word + "s")."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"
