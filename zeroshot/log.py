"""The `zeroshot` logger: every message the package prints goes through it, so users can silence or redirect them.

On the terminal a message is one line, `zeroshot: ...` on stderr. `ZEROSHOT_LOG_LEVEL=WARNING` (or a command's
`-q`) keeps only warnings and errors; the Python API leaves handlers to the application, as libraries should,
so there only warnings reach stderr (through logging's last-resort handler) until the application configures logging.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("zeroshot")


def setup(quiet: bool = False) -> None:
    """Configure the CLI's handler once: one line per message on stderr, at ZEROSHOT_LOG_LEVEL (default INFO)."""
    level = "WARNING" if quiet else os.environ.get("ZEROSHOT_LOG_LEVEL", "INFO").upper()
    if not any(getattr(h, "_zeroshot", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zeroshot: %(message)s"))
        handler._zeroshot = True
        log.addHandler(handler)
        log.propagate = False  # Hydra configures the root logger; one line per message, not two
    log.setLevel(getattr(logging, level, logging.INFO))
