"""Where a command's figures are drawn: in one helper process that starts with the command.

matplotlib takes about 0.6 s to import and its first text another 0.1 s, which on a repeat `zeroshot prompts`
run is a fifth of the wall time. The helper imports it on another core while the command imports torch and
computes, so by the time a figure is asked for only the drawing is left, and that too overlaps with what the
command does next. `__main__` starts the helper for a run that draws figures; commands hand each figure to
`draw` and call `finish` before the file that marks their run complete. Without a helper (the pipeline called
from Python, a test) `draw` draws in the calling process.

A figure function must live in a module that imports no torch (figures/run.py, figures/prompts.py), and take
plain data (numbers, lists, numpy arrays, strings, paths): the helper unpickles its arguments, and a
torch tensor there would import torch in the helper as well. A figure that fails raises its own traceback from
`finish`.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable

_helper: ProcessPoolExecutor | None = None
_pending: list[Future] = []


def _warm() -> None:
    """In the helper: import matplotlib (Agg) and draw one throwaway text, which loads the font cache and font."""
    import io

    from zeroshot.figures.base import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.set_title("warm")
    fig.savefig(io.BytesIO(), format="png", dpi=20)
    plt.close(fig)


def start() -> None:
    """Start the helper process (spawned: a fork would copy a process that may hold threads)."""
    global _helper
    if _helper is None:
        _helper = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        _pending.append(_helper.submit(_warm))


def started() -> bool:
    return _helper is not None


def draw(figure: Callable, *args, **kwargs) -> None:
    """Draw `figure(*args, **kwargs)` in the helper if one runs, else here and now."""
    if _helper is None:
        figure(*args, **kwargs)
        return
    args = tuple(_absolute(a) for a in args)
    kwargs = {k: _absolute(v) for k, v in kwargs.items()}
    _pending.append(_helper.submit(figure, *args, **kwargs))


def _absolute(arg):
    """A path as the helper must see it: it keeps the cwd it started in."""
    return arg.resolve() if isinstance(arg, Path) else arg


def finish() -> None:
    """Wait for every figure handed to the helper; the first that failed raises, with its traceback."""
    while _pending:
        _pending.pop(0).result()


def stop() -> None:
    """End the helper (after `finish`, or on an error: figures not yet drawn are dropped)."""
    global _helper
    if _helper is not None:
        _pending.clear()
        _helper.shutdown(wait=True, cancel_futures=True)
        _helper = None
