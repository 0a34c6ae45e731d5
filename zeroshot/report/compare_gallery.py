"""The images one system got right and the other wrong, for `compare` and `report`: compare_gallery.html and its
thumbnails (gallery/<pair>/<n>.jpg) in the comparison's own folder, each image with the wrong system's top-5 and
the right system's answer. Thumbnails come from the runs' own galleries where they hold the image, else from the
recorded path (file or webdataset shard); an image neither has is shown as text.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.files import atomic_write
from zeroshot.gallery import figure_html, open_recorded, page, shown, write_thumbnail
from zeroshot.metrics import paired as cmp
from zeroshot.metrics.calibration import probabilities
from zeroshot.record import slug
from zeroshot.runs import RunRecord

PER_SIDE = 12  # images shown per side of a pair and dataset: the most confident mistakes of the other system
SIZE = 112


def _kind(run_dir: str) -> str:
    m = RunRecord.from_json(Path(run_dir) / "metrics.json")
    return "sigmoid" if m.get("probability") == "sigmoid_renormalized" else "softmax"


def _indices(run_dir: str, keys: np.ndarray) -> np.ndarray:
    """Each key's dataset index (the name of its thumbnail in the run's own gallery), -1 where unknown."""
    out = np.array([int(k[1:]) if str(k).startswith("#") and str(k)[1:].isdigit() else -1 for k in keys])
    preds = Path(run_dir) / "predictions.csv"
    if preds.exists() and (out < 0).any():
        table = pd.read_csv(preds, usecols=["index", "path"], keep_default_na=False)
        where = dict(zip(table["path"].astype(str), table["index"]))
        out = np.array([where.get(str(k), i) for k, i in zip(keys, out)])
    return out


def _image(key: str, index: int, run_dirs: tuple[str, str]):
    for run_dir in run_dirs:  # a thumbnail the run already wrote
        own = Path(run_dir) / "gallery" / f"{index}.jpg"
        if index >= 0 and own.exists():
            return open_recorded(str(own))
    return None if str(key).startswith("#") else open_recorded(str(key))


def pair_section(a, b, dataset: str, out: Path, n: int) -> str:
    """Two galleries for one pair on one dataset: right only in A, right only in B."""
    pa, pb = cmp.pair(a, b)
    probs = {r.name: (lambda rows, r=r: probabilities(r.logits[rows], _kind(r.run_dir))) for r in (pa, pb)}
    right_a, right_b = pa.logits.argmax(1) == pa.labels, pb.logits.argmax(1) == pb.labels
    index = _indices(pa.run_dir, pa.keys)
    folder = out / "gallery" / slug(f"{dataset}_{a.name}_vs_{b.name}")[:120]
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"<h2>{html.escape(dataset)}: A = {html.escape(a.name)}, B = {html.escape(b.name)}</h2>"]
    for title, only, wrong, right in (("Right in A, wrong in B", right_a & ~right_b, pb, pa),
                                      ("Right in B, wrong in A", right_b & ~right_a, pa, pb)):
        ra, wa = ("A", "B") if right is pa else ("B", "A")
        rows = np.flatnonzero(only)
        rows = rows[np.argsort(-wrong.logits[rows].max(1), kind="stable")][:n]  # the wrong system's surest first
        items = shown(rows, wrong.labels, probs[wrong.name], index, wrong.keys)
        right_items = shown(rows, right.labels, probs[right.name], index, right.keys)
        figures = []
        for k, r in enumerate(rows.tolist()):
            dest = folder / f"{'a' if right is pa else 'b'}{k}.jpg"
            ok = dest.exists() or write_thumbnail(_image(pa.keys[r], int(index[r]), (pa.run_dir, pb.run_dir)), dest, SIZE)
            best = right_items[r]
            answer = right.classnames[best.top5[0]] if right.classnames else str(best.top5[0])
            extra = f"<div>{ra}: {html.escape(answer)} {100 * best.scores[0]:.1f}%</div><div>{wa}'s top-5:</div>"
            names = wrong.classnames or [str(c) for c in range(wrong.logits.shape[1])]
            figures.append(figure_html(items[r], names, f"gallery/{folder.name}/{dest.name}" if ok else None, extra))
        parts.append(f"<h3>{title}: {int(only.sum()):,} images (showing {len(rows)})</h3><div class='grid'>"
                     + "".join(figures) + "</div>")
    return "\n".join(parts)


def write_compare_gallery(comp, out: Path, load_run, n: int = PER_SIDE) -> Path | None:
    """compare_gallery.html for every pair and dataset of a Comparison, or None when nothing was compared;
    `load_run(run_dir, name)` reads a run's per-image record (report.compare.load_run)."""
    seen = list(dict.fromkeys((r["system_a"], r["system_b"], r["dataset"], r["run_a"], r["run_b"]) for r in comp.rows))
    if not seen:
        return None
    sections = []
    for a, b, dataset, run_a, run_b in seen:
        sections.append(pair_section(load_run(run_a, a), load_run(run_b, b), dataset, out, n))
    intro = (f"For every two systems that ran on the same images: the images one got right (top-1) and the other got "
             f"wrong, at most {n} per side, the wrong system's most confident mistakes first, each with the wrong "
             "system's top-5 and the right system's answer.")
    path = out / "compare_gallery.html"
    with atomic_write(path, "w") as f:
        f.write(page("Right in one system, wrong in the other", intro, sections))
    return path
