"""Issue 22: figures drawn in the helper process (zeroshot.figures.drawing) are the figures drawn in-process, the helper
never imports torch, and a figure that fails raises from `finish` with its own error."""

import numpy as np
import pytest

from zeroshot.figures import drawing
from zeroshot.figures.prompts import (
    plot_description_deltas,
    plot_selection,
    plot_templates,
)
from zeroshot.figures.run import plot_confusion, plot_reliability
from zeroshot.metrics.calibration import reliability_curve


def figures(out, tag):
    """Every figure of `zeroshot prompts` and one of `eval`, written under out with tag in their names."""
    ensemble = [0.5, 0.4, 0.6]  # top-1, CI low, CI high
    yield plot_templates, (["a {}.", "a photo of a {}."], [0.4, 0.55], ([0.3, 0.45], [0.5, 0.65]), ensemble,
                           out / f"templates{tag}.png", "cifar10 | ViT-B-32")
    yield plot_selection, ([1, 2], [0.5, 0.6], [0.45, 0.5], 0.5, out / f"selection{tag}.png", "t")
    yield plot_description_deltas, (["cat", "dog", "bird"], [-0.1, 0.0, 0.2], out / f"deltas{tag}.png", "cupl vs templates")
    yield plot_confusion, (np.array([[3, 1], [0, 4]]), ["cat", "dog"], out / f"confusion{tag}.png", "t")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=40)
    yield plot_reliability, ([reliability_curve("model's own", probs, np.arange(40) % 3)], out / f"reliability{tag}.png", "t")


@pytest.fixture
def helper():
    drawing.start()
    yield
    drawing.stop()


def test_the_helper_draws_the_same_figures_without_torch(tmp_path, helper):
    assert drawing.started()
    for figure, args in figures(tmp_path, "_helper"):
        drawing.draw(figure, *args)
    drawing.finish()
    modules = drawing._helper.submit(eval, "sorted(__import__('sys').modules)").result()
    assert "matplotlib" in modules and "torch" not in modules  # it drew, and the figures' data brought no torch
    drawing.stop()
    assert not drawing.started()
    for figure, args in figures(tmp_path, "_here"):
        drawing.draw(figure, *args)  # no helper: drawn in this process, at once
    for name in ("templates", "selection", "deltas", "confusion", "reliability"):
        here, there = (tmp_path / f"{name}_here.png").read_bytes(), (tmp_path / f"{name}_helper.png").read_bytes()
        assert there == here, name


def test_a_figure_that_fails_raises_from_finish(tmp_path, helper):
    drawing.draw(plot_description_deltas, ["cat"], ["not a number"], tmp_path / "bad.png", "t")
    with pytest.raises(ValueError, match="not a number"):
        drawing.finish()


def test_relative_paths_are_resolved_in_this_process(tmp_path, helper, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the helper was started elsewhere: it must not write under its own cwd
    from pathlib import Path

    drawing.draw(plot_description_deltas, ["cat"], [0.1], Path("rel.png"), "t")
    drawing.finish()
    assert (tmp_path / "rel.png").is_file()
    # drawn by the helper, a process of its own with another cwd and no torch, not here
    there = drawing._helper.submit(eval, "(__import__('os').getpid(), __import__('os').getcwd(), "
                                         "'torch' in __import__('sys').modules)").result()
    assert there[0] != __import__("os").getpid() and Path(there[1]) != tmp_path and there[2] is False
    assert not (Path(there[1]) / "rel.png").exists()


def test_save_figure_writes_whole_or_nothing(tmp_path):
    """A figure that fails while being written leaves neither a partial file nor a temp file, and is closed."""
    from zeroshot.figures.base import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1])

    def half_written(f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError("disk full")

    fig.savefig = half_written
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == [] and not plt.fignum_exists(fig.number)
    fig, _ = plt.subplots()
    assert save_figure(fig, tmp_path / "sub" / "f.png").read_bytes().startswith(b"\x89PNG")
