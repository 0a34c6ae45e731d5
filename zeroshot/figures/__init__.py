"""Every figure the package draws, and nothing else: the only place that imports matplotlib.

- base.py: pyplot on the file-only Agg backend (imported when first drawn) and `save_figure`, the one writer
  (atomic: a figure file is whole or absent).
- run.py: a run's figures (confusion matrix, per-class accuracy, reliability diagram, image-caption selection).
- prompts.py: `zeroshot prompts`' figures (templates, greedy selection, description deltas, prompt weights).
- report.py: a report's and a comparison's figures (heat map, bars beside the published marks, effective
  robustness, paired differences).
- drawing.py: the helper process that draws a command's figures while the command computes.

Every figure is `plot_x(data..., path, title)` and returns the path it wrote: the caller decides what to draw and
where (the numbers come from metrics/, report/ or the command), a figure only draws. Nothing here imports torch,
and importing a module here imports no matplotlib: that happens when the first figure is drawn.
"""
