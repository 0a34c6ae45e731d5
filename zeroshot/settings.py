"""The valid range of every numeric (and choice) setting, as data, checked before any work starts.

`batch_size=0` used to end in "range() arg 3 must not be zero" minutes into a run; a negative `bootstrap` in
an empty quantile. Each entry is (kind, low, high, other allowed values, an example): kind `int` or `float`;
bounds are inclusive unless written `(value, OPEN)`; the other allowed values are e.g. null or "auto". A key
absent from a command's config is skipped, so one table serves every command.
"""
from __future__ import annotations

from zeroshot.errors import ConfigError

OPEN = "open"
# key: (kind, low, high, extra values allowed besides numbers, an example)
RANGES: dict[str, tuple] = {
    "batch_size": ("int", 1, None, (), "64"),
    "text_batch_size": ("int", 1, None, (), "256"),
    "num_workers": ("int", 0, None, ("auto",), "auto"),
    "threads": ("int", 1, None, (None,), "null"),
    "seed": ("int", None, None, (), "0"),
    "chunk_size": ("int", 1, None, (), "2048"),
    "dist_timeout_s": ("float", (0, OPEN), None, (), "600"),
    "bootstrap": ("int", 1, None, (), "1000"),
    "select_fraction": ("float", (0, OPEN), (1, OPEN), (), "0.5"),
    "max_selected": ("int", 1, None, (None,), "null"),
    "delta_threshold": ("float", 0, None, (), "2.0"),
    "tolerance": ("float", 0, None, (), "0.001"),
    "probe.val_fraction": ("float", (0, OPEN), (1, OPEN), (), "0.2"),
    "probe.max_iter": ("int", 1, None, (), "1000"),
    "probe.shots": ("int", 1, None, (None,), "16"),
    "gallery.per_class": ("int", 0, None, (), "8"),
    "gallery.max_images": ("int", 1, None, (), "2000"),
    "gallery.confusions": ("int", 0, None, (), "10"),
    "gallery.per_confusion": ("int", 0, None, (), "6"),
    "gallery.size": ("int", 16, 512, (), "112"),
    "calibration.fraction": ("float", (0, OPEN), (1, OPEN), (), "0.2"),
}
CHOICES: dict[str, tuple] = {
    "dist_shards": ("balanced", "chunks"),
    "worker_priority": ("auto", "idle", "normal"),
    "dataset.ties": ("strict", "first"),  # image-caption selection: how a tie counts (metrics/compositionality.py)
    "fast_decode": (False, True),
}


def _bound(b) -> tuple[float | None, bool]:
    return (b[0], True) if isinstance(b, tuple) else (b, False)


def _describe(kind: str, low, high, extra) -> str:
    (lo, lo_open), (hi, hi_open) = _bound(low), _bound(high)
    bounds = [f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []
    bounds += [f"{'<' if hi_open else '<='} {hi}"] if hi is not None else []
    text = ("a whole number" if kind == "int" else "a number") + (" " + " and ".join(bounds) if bounds else "")
    if extra:
        text += " or " + " or ".join("null" if e is None else str(e) for e in extra)
    return text


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "keys") or part not in node:
            return KeyError
        node = node[part]
    return node


def check_settings(cfg) -> None:
    """Raise ConfigError naming the first setting outside its range, with the range and an example."""
    for key, (kind, low, high, extra, example) in RANGES.items():
        value = _get(cfg, key)
        if value is KeyError or value in extra:
            continue
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (kind == "float" or float(value).is_integer())
        if ok:
            (lo, lo_open), (hi, hi_open) = _bound(low), _bound(high)
            ok = (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise ConfigError(f"{key}={value!r} is out of range: it must be {_describe(kind, low, high, extra)} "
                              f"(e.g. {key}={example})")
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value is not KeyError and value not in choices:
            names = (str(c).lower() if isinstance(c, bool) else str(c) for c in choices)  # YAML's true, false
            raise ConfigError(f"{key}={value!r} is not a choice: {', '.join(names)}")

