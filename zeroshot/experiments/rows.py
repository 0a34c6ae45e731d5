"""A row of a prompt-experiment table: one classifier's metrics on a set of images, with a bootstrap 95% CI and a
paired bootstrap p-value against the table's reference classifier (the baseline template in `zeroshot prompts`'
tables, the template ensemble in the description tables).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from zeroshot.metrics.classification import classification_metrics
from zeroshot.metrics.stats import paired_accuracy_stats

Measured = tuple[dict, np.ndarray]  # a row's point metrics, and the 0/1 correctness its bootstrap resamples


@dataclass(frozen=True)
class Scoring:
    """The images a table scores classifiers on: their labels [n], the reference classifier's 0/1 correctness on
    them [n], the bootstrap's resamples and seed, and the name of the p-value column."""

    labels: torch.Tensor
    reference: np.ndarray
    bootstrap: int
    seed: int
    p_key: str = "p_vs_baseline"

    def take(self, rows: torch.Tensor) -> "Scoring":
        """The same on `rows` of these images only (a held-out part): its resamples are drawn for its own size."""
        return dataclasses.replace(self, labels=self.labels[rows], reference=self.reference[rows.numpy()])

    def measure(self, name: str, logits: torch.Tensor, kind: str) -> Measured:
        """Point metrics of logits [n, C] on these images. The logits are not kept ([N, C] each: a table of 80
        templates would hold 16 GB at ImageNet size); `rows` adds the bootstrap from the correctness alone."""
        m = classification_metrics(logits, self.labels)
        row = {"kind": kind, "name": name, "n_images": int(len(self.labels)), "top1": m["top1"], "top5": m["top5"],
               "mean_per_class_recall": m["mean_per_class_recall"]}
        return row, logits.argmax(1).eq(self.labels).numpy()

    def rows(self, measured: list[Measured]) -> list[dict]:
        """Each measured row with its CI and paired p-value, all from one pass over the resamples."""
        if not measured:
            return []
        stats = paired_accuracy_stats([correct for _, correct in measured], self.reference, self.bootstrap, self.seed)
        return [{**row, "top1_ci_low": low, "top1_ci_high": high, self.p_key: p}
                for (row, _), (low, high, p) in zip(measured, stats)]

    def row(self, name: str, logits: torch.Tensor, kind: str) -> dict:
        return self.rows([self.measure(name, logits, kind)])[0]
