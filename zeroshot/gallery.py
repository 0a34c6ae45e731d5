"""Error galleries: the images a run got wrong, as small JPEG thumbnails beside an HTML page that opens from the
file system (no server, no script needed), each with its top-5 and their probabilities.

A run's gallery (`gallery.html` and `gallery/<index>.jpg` in its run directory, written once, by `eval`) groups
the wrong images by the most frequent confusions and by true class, at most `per_class` thumbnails per class and
`per_confusion` per confusion, most confident mistakes first, so a 50,000-image run stays small. `compare`
writes a page of the images one system got right and the other wrong. Thumbnails come from the run's own
images (a file path, or a webdataset's `shard.tar:key`), or from the loader, which made them while it decoded
the images for the model; an image that cannot be read is shown as text.
numpy and Pillow only (no torch, no matplotlib).
"""
from __future__ import annotations

import html
import io
import os
import tarfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from zeroshot.files import atomic_write

THUMBNAIL_GAP = 1.0  # a JPEG is decoded at the DCT scale that keeps the thumbnail's size, not twice it
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}"
         "h2{margin-top:1.5em}.grid{display:flex;flex-wrap:wrap;gap:10px}"
         "figure{margin:0;width:150px;font-size:11px;line-height:1.3;overflow-wrap:anywhere}"
         "figure img{width:128px;height:128px;object-fit:contain;background:#f4f4f4;border:1px solid #ddd;display:block}"
         ".noimg{width:128px;height:128px;background:#f4f4f4;border:1px dashed #bbb;display:flex;align-items:center;"
         "justify-content:center;text-align:center;color:#777}"
         "ol{margin:2px 0 0;padding-left:1.3em}.true{color:#060;font-weight:bold}.path{color:#777}"
         "details{margin:0.5em 0}summary{cursor:pointer;font-weight:bold}")


@dataclass
class Shown:
    """One image on a page: where it is (row in the run, dataset index, path), its label and its top-5 with scores."""
    row: int
    index: int
    path: str
    label: int
    top5: list[int]
    scores: list[float]


def open_recorded(path: str, thumbnail: int | None = None):
    """The image a run recorded: a file, or a webdataset sample `shard.tar:key`; None if it cannot be read.

    With `thumbnail` (px, longer side) a JPEG file comes back as that thumbnail, made by Pillow from the file
    not yet decoded: libjpeg then decodes at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the thumbnail's
    size (Pillow's `draft`, `reducing_gap` 1: the scaled IDCT is itself the low-pass filter), and the resize
    that is left is small: 2.4 against 3.1-3.4 CPU-ms for a 112 px thumbnail of a 500x375 photo with Pillow's
    default gap of 2, a mean difference of about one level. For display only, never for a model's input."""
    from PIL import Image

    try:
        if path and os.path.isfile(path):
            image = Image.open(path)
            if thumbnail and image.format == "JPEG":
                image.thumbnail((thumbnail, thumbnail), reducing_gap=THUMBNAIL_GAP)  # decodes (reduced scale), resizes
            image.load()
            return image
        shard, _, key = str(path).rpartition(":")
        if shard.endswith(".tar") and os.path.isfile(shard):
            with tarfile.open(shard) as tar:
                for ext in IMAGE_EXTENSIONS:
                    try:
                        data = tar.extractfile(f"{key}.{ext}")
                    except KeyError:
                        continue
                    if data is not None:
                        image = Image.open(io.BytesIO(data.read()))
                        image.load()
                        return image
    except (OSError, EOFError, SyntaxError, ValueError, zlib.error, tarfile.TarError, Image.DecompressionBombError):
        return None
    return None


def thumbnail_jpeg(image, size: int) -> bytes:
    """A decoded image as a thumbnail's JPEG bytes, at most `size` px on the longer side (aspect kept), the image
    itself left as it is. The loader makes these beside the model's input when the gallery may show most of a
    run's images (commands/evaluate.py): 0.6 CPU-ms for a 500x375 photo already decoded, where opening the file
    again costs 2.5 (most of it entropy decoding, which a reduced DCT scale does not skip)."""
    from PIL import Image

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    scale = size / max(w, h)
    if scale < 1:  # a box reduction to at least the thumbnail's size, then bicubic
        rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC,
                         reducing_gap=THUMBNAIL_GAP)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=85)
    return out.getvalue()


def write_thumbnail(image, dest: Path, size: int) -> bool:
    """A JPEG at most `size` px on its longer side (aspect kept), written atomically; False if there is no image.
    `image`: a PIL image, or a thumbnail's JPEG bytes already made (`thumbnail_jpeg`), written as they are."""
    if image is None:
        return False
    if isinstance(image, bytes):
        with atomic_write(dest, "wb") as f:
            f.write(image)
        return True
    image = image.convert("RGB")
    image.thumbnail((size, size))
    with atomic_write(dest, "wb") as f:
        image.save(f, format="JPEG", quality=85)
    return True


def confident_first(rows: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    return rows[np.argsort(-confidence[rows], kind="stable")]


def select_errors(labels: np.ndarray, top1: np.ndarray, confidence: np.ndarray, per_class: int, confusions: int,
                  per_confusion: int) -> tuple[list[tuple[int, int, int, np.ndarray]], dict[int, tuple[int, np.ndarray]]]:
    """The rows to show: the `confusions` most frequent (true, predicted) pairs, each (true, predicted, count, rows),
    and per true class (wrong count, rows); at most per_confusion / per_class rows each, most confident first."""
    wrong = np.flatnonzero((labels != top1) & (labels >= 0))
    pairs = Counter(zip(labels[wrong].tolist(), top1[wrong].tolist()))
    top = []
    for (t, p), count in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:confusions]:
        rows = wrong[(labels[wrong] == t) & (top1[wrong] == p)]
        top.append((t, p, count, confident_first(rows, confidence)[:per_confusion]))
    by_class = {}
    for t in np.unique(labels[wrong]).tolist():
        rows = wrong[labels[wrong] == t]
        by_class[t] = (len(rows), confident_first(rows, confidence)[:per_class])
    return top, by_class


def shown(rows, labels, probs_of: Callable[[np.ndarray], np.ndarray], indices, paths) -> dict[int, Shown]:
    """Shown entries for these rows: top-5 classes and probabilities from the rows' own probabilities."""
    rows = np.unique(np.asarray(list(rows), dtype=np.int64))
    if not len(rows):
        return {}
    probs = probs_of(rows)
    k = min(5, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return {int(r): Shown(int(r), int(indices[r]), str(paths[r]) if paths is not None else "", int(labels[r]),
                          order[i].tolist(), probs[i, order[i]].tolist()) for i, r in enumerate(rows)}


def figure_html(item: Shown, names: list[str], src: str | None, extra: str = "") -> str:
    """One image: the thumbnail (or, without one, a box saying so), its true class and its top-5 with scores."""
    esc = html.escape
    what = f"#{item.index}" + (f" {item.path}" if item.path else "")
    if src:
        picture = f"<img src='{esc(src, quote=True)}' alt='{esc(what, quote=True)}' loading='lazy'>"
    else:
        picture = "<div class='noimg'>image not available</div>"
    top = "".join(f"<li{' class=true' if c == item.label else ''}>{esc(names[c])} {100 * s:.1f}%</li>"
                  for c, s in zip(item.top5, item.scores))
    return (f"<figure title='{esc(what, quote=True)}'>{picture}<div>true: <span class='true'>{esc(names[item.label])}</span>"
            f"</div>{extra}<ol>{top}</ol><div class='path'>{esc(short_name(item))}</div></figure>")


def short_name(item: Shown) -> str:
    """The caption's name: the index and the path's last two parts (the full path is the figure's tooltip)."""
    tail = "/".join(item.path.replace("\\", "/").split("/")[-2:]) if item.path else ""
    return f"#{item.index} {tail}".strip()


def page(title: str, intro: str, sections: list[str]) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(intro)}</p>" + "\n".join(sections) + "</body></html>")


@dataclass
class RunView:
    """What a gallery needs of a run, row-aligned: labels, logits, dataset indices, paths, class names, probability kind."""
    names: list[str]
    labels: np.ndarray
    logits: np.ndarray
    indices: np.ndarray
    paths: list[str] | None
    kind: str = "softmax"

    def probs(self, rows: np.ndarray) -> np.ndarray:
        from zeroshot.metrics.calibration import probabilities

        return probabilities(self.logits[rows], self.kind)


def per_class_bound(labels: np.ndarray, top1: np.ndarray, settings) -> int:
    """Images per class: `per_class`, lowered so that all the classes with mistakes together show at most
    `max_images` (ImageNet's 1,000 classes: 2 each by default), but never below 1."""
    classes = len(np.unique(labels[(labels != top1) & (labels >= 0)]))
    return max(1, min(int(settings.per_class), int(settings.max_images) // max(classes, 1)))


def write_run_gallery(run_dir: Path, view: RunView, image_of: Callable[[int], object], settings, title: str, *,
                      threads: int = 1) -> Path:
    """gallery.html and gallery/<index>.jpg for one run; `image_of(row)` gives the row's image (PIL) or None.

    With `threads` > 1 (an `image_of` that may run in several threads at once) the thumbnails are made in that
    many threads: Pillow decodes, resizes and encodes without the GIL, so the cores share the work."""
    top1 = view.logits.argmax(axis=1)
    confidence = view.logits.max(axis=1)  # order only: the same order as the top probability within a run
    per_class = per_class_bound(view.labels, top1, settings)
    top, by_class = select_errors(view.labels, top1, confidence, per_class, int(settings.confusions),
                                  int(settings.per_confusion))
    rows = [r for *_, rs in top for r in rs] + [r for _, rs in by_class.values() for r in rs]
    items = shown(rows, view.labels, view.probs, view.indices, view.paths)
    folder = run_dir / "gallery"
    folder.mkdir(exist_ok=True)

    def thumbnail(r: int) -> bool:
        name = f"{items[r].index}.jpg"
        return (folder / name).exists() or write_thumbnail(image_of(r), folder / name, int(settings.size))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        made = dict(zip(items, pool.map(thumbnail, items)))
    src = {r: f"gallery/{items[r].index}.jpg" for r, ok in made.items() if ok}
    n_wrong = int(((view.labels != top1) & (view.labels >= 0)).sum())
    sections = [confusion_section(top, items, src, view.names), class_section(by_class, items, src, view.names)]
    intro = (f"{n_wrong:,} of {len(view.labels):,} images wrong (top-1). Most confident mistakes first; at most "
             f"{settings.per_confusion} images per confusion and {per_class} per class. Each image lists its "
             "top-5 classes with the run's probabilities; the true class is in green.")
    out = run_dir / "gallery.html"
    with atomic_write(out, "w") as f:
        f.write(page(f"Errors: {title}", intro, sections))
    return out


def confusion_section(top, items, src, names) -> str:
    parts = ["<h2>Most frequent confusions</h2>"]
    for t, p, count, rows in top:
        parts.append(f"<h3>{html.escape(names[t])} &rarr; {html.escape(names[p])} ({count:,})</h3><div class='grid'>"
                     + "".join(figure_html(items[int(r)], names, src.get(int(r))) for r in rows) + "</div>")
    return "\n".join(parts if top else parts + ["<p>No mistakes.</p>"])


def class_section(by_class, items, src, names) -> str:
    parts = ["<h2>By true class</h2>"]
    for t, (count, rows) in sorted(by_class.items(), key=lambda kv: (-kv[1][0], kv[0])):
        parts.append(f"<details open><summary>{html.escape(names[t])}: {count:,} wrong</summary><div class='grid'>"
                     + "".join(figure_html(items[int(r)], names, src.get(int(r))) for r in rows) + "</div></details>")
    return "\n".join(parts)
