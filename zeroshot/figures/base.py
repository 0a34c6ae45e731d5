"""What every figure shares: matplotlib's pyplot on the file-only backend, imported when first needed, and the
one function that writes a figure.
"""
from __future__ import annotations

from pathlib import Path

from zeroshot.files import atomic_write


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (runs have no display), imported when first needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (whole or not at all, via a temp file renamed into place) and close a figure (pyplot keeps
    every open figure in memory until closed). The format is the path's suffix."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_write(path) as f:
            fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        pyplot().close(fig)
    return path


def short(text: str, n: int) -> str:
    """A label cut to fewer than n characters, with an ellipsis where it was cut."""
    return text if len(text) < n else text[:n - 2] + "…"
