"""Issue 22: figures drawn in the helper process (zeroshot.drawing) are the figures drawn in-process, the helper
never imports torch, and a figure that fails raises from `finish` with its own error."""

import numpy as np
import pytest

from zeroshot import drawing
from zeroshot.experiments.figures import (
    plot_description_deltas,
    plot_selection,
    plot_templates,
)
from zeroshot.metrics.calibration import plot_reliability, reliability_curve
from zeroshot.plots import plot_confusion


def figures(out, tag):
    """Every figure of `zeroshot prompts` and one of `eval`, written under out with tag in their names."""
    ensemble = [0.5, 0.4, 0.6]  # top-1, CI low, CI high
    yield plot_templates, (out / f"templates{tag}.png", ["a {}.", "a photo of a {}."], [0.4, 0.55], [0.3, 0.45],
                           [0.5, 0.65], ensemble, "cifar10 | ViT-B-32")
    yield plot_selection, (out / f"selection{tag}.png", [1, 2], [0.5, 0.6], [0.45, 0.5], 0.5, "t")
    yield plot_description_deltas, (out / f"deltas{tag}.png", ["cat", "dog", "bird"], [-0.1, 0.0, 0.2], "cupl vs templates")
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
    drawing.draw(plot_description_deltas, tmp_path / "bad.png", ["cat"], ["not a number"], "t")
    with pytest.raises(ValueError, match="not a number"):
        drawing.finish()


def test_relative_paths_are_resolved_in_this_process(tmp_path, helper, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the helper was started elsewhere: it must not write under its own cwd
    from pathlib import Path

    drawing.draw(plot_description_deltas, Path("rel.png"), ["cat"], [0.1], "t")
    drawing.finish()
    assert (tmp_path / "rel.png").is_file()
    # drawn by the helper, a process of its own with another cwd and no torch, not here
    there = drawing._helper.submit(eval, "(__import__('os').getpid(), __import__('os').getcwd(), "
                                         "'torch' in __import__('sys').modules)").result()
    assert there[0] != __import__("os").getpid() and Path(there[1]) != tmp_path and there[2] is False
    assert not (Path(there[1]) / "rel.png").exists()
