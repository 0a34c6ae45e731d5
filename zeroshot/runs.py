"""The run record: one `RunRecord` per metrics.json. Every command fills one (and writes it through
record.run_directory); `report/`, `compare` and the trackers read it back with `RunRecord.from_json`. `OLD_RUNS`
is the one place that says what a run written before a field existed reads as.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeroshot.log import log

KINDS = ("eval", "retrieval", "compositionality", "linear_probe")

# The keys run_record writes, in its order: what a run ran (weights, images, prompts, software).
IDENTITY_KEYS = (
    "model", "model_release", "architecture", "activation", "activation_from", "backend", "source", "location",
    "revision", "checkpoint", "checkpoint_sha256", "preprocess", "preprocess_from", "assumed", "model_slug",
    "dataset", "dataset_label", "dataset_fingerprint", "dataset_fingerprint_kind", "dataset_root", "split",
    "benchmark", "comparable", "not_comparable_reason", "prompts", "prompts_hash", "prompts_label", "language",
    "language_detail", "text_language", "templates", "class_prompts", "label_free", "precision", "device",
    "world_size", "versions",
)

# What a run written before a field existed reads as: the one place that says so (each said once, in the log).
# A value, or a function of the record for what the run did record. Any other missing field reads as None: unknown.
OLD_RUNS: dict[str, Any] = {
    "split": "test",  # the only split before splits were recorded
    "architecture": "",
    "prompts": "",
    "checkpoint_sha256": "",
    "comparable": False,  # before benchmarks were recorded: nothing said published numbers apply
    "not_comparable_reason": lambda r: "" if "comparable" in r else "run recorded no benchmark",
    "dataset_label": lambda r: r.get("dataset"),
    # keyed by what the run did record: the dataset's name and image count
    "dataset_fingerprint": lambda r: f"{r.get('dataset')}:{r.get('n_images')}",
    "prompts_hash": lambda r: r.get("prompts"),
    "prompts_label": lambda r: r.get("prompts"),
    "timestamp": lambda r: r.path.parent.name if r.path else None,  # the run directory's name is its timestamp
    "metric": "top1",
    "main_metric": lambda r: r.get("top1"),
}
_said: set[str] = set()


def old_run_value(record: RunRecord, key: str):
    """What `record` (which lacks `key`) reads as, said once per field and process."""
    value = OLD_RUNS.get(key)
    value = value(record) if callable(value) else value
    if key not in _said:
        _said.add(key)
        log.info("runs written before zeroshot recorded %r (e.g. %s) read it as %r", key, record.path or "a run", value)
    return value


@dataclass
class RunRecord:
    """One run's metrics.json, in its order: kind (not written for eval, whose runs never held one), the
    command's results, the identity (run_record: weights, images, prompts, software), then the details
    (counts, timings, timestamp). Read back, a field the run did not record reads as OLD_RUNS says."""

    kind: str  # one of KINDS
    results: dict = field(default_factory=dict)  # what the run measured (top1, recalls, scores, calibration)
    identity: dict = field(default_factory=dict)  # run_record's keys (IDENTITY_KEYS)
    details: dict = field(default_factory=dict)  # sizes, timings, hashes of captions or instances, timestamp
    path: Path | None = None  # the metrics.json it was read from

    def to_json(self) -> dict:
        head = {} if self.kind == "eval" else {"kind": self.kind}
        return {**head, **self.results, **self.identity, **self.details}

    @classmethod
    def from_json(cls, path: str | Path) -> RunRecord:
        """A run's metrics.json; OSError or ValueError (JSON, not an object) where it cannot be read."""
        path = Path(path)
        m = json.loads(path.read_text())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
        return cls.from_dict(m, path)

    @classmethod
    def from_dict(cls, m: dict, path: Path | None = None) -> RunRecord:
        keys = list(m)
        first = next((i for i, k in enumerate(keys) if k in IDENTITY_KEYS), len(keys))
        last = max((i for i, k in enumerate(keys) if k in IDENTITY_KEYS), default=first - 1)
        # eval's metrics.json has never held a kind (to_json keeps it so): its absence means eval
        return cls(m.get("kind", "eval"), {k: m[k] for k in keys[:first] if k != "kind"},
                   {k: m[k] for k in keys[first:last + 1]}, {k: m[k] for k in keys[last + 1:]}, path)

    def _find(self, key: str):
        for part in (self.results, self.identity, self.details):
            if key in part:
                return True, part[key]
        return (True, self.kind) if key == "kind" else (False, None)

    def __contains__(self, key: str) -> bool:
        return self._find(key)[0]

    def __getitem__(self, key: str):
        found, value = self._find(key)
        if not found:
            raise KeyError(key)
        return value

    def get(self, key: str, default=None):
        """The recorded value; a field the run lacks reads as OLD_RUNS says, else `default` (None: unknown)."""
        found, value = self._find(key)
        if found:
            return value
        return old_run_value(self, key) if key in OLD_RUNS else default

    @property
    def run_dir(self) -> Path | None:
        return self.path.parent if self.path else None
