"""Regenerate zeroshot/reference/published_multilingual_retrieval.csv from open_clip's published multilingual
retrieval table (run once; the output is committed).

Input: open_clip's docs/openclip_multilingual_retrieval_results.csv, github.com/mlfoundations/open_clip at commit
89fb801f1e6087880e951fc8354b8a2077b79c6d (sha256 1c8b9b82834c90a8f01a545ba63b62b6b3d29af0fcfabb63f78477140561556e):
CLIP_benchmark's recall@1/5/10 both ways on crossmodal3600 (36 languages) and multilingual_mscoco_captions (11),
one column per (dataset, metric, language), fractions.

    python tools/make_multilingual_reference.py PATH/openclip_multilingual_retrieval_results.csv

Rows: source (open_clip), release (ARCH/TAG, -quickgelu dropped as in make_reference.py), dataset (zeroshot's
names: crossmodal3600, multilingual_mscoco), language (as the dataset spells it), then recall@1 both ways and
their mean, mean_recall@1 (DataComp's retrieval metric), in %. Recall@5/10 stay in open_clip's file. The tool checks two
facts on every row as it goes: each `<dataset> <metric> avg` column is the plain mean over that dataset's
languages, and `avg` is the plain mean of every per-language number.
"""
import csv
import hashlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import release  # noqa: E402

SHA256 = "1c8b9b82834c90a8f01a545ba63b62b6b3d29af0fcfabb63f78477140561556e"
OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference" / "published_multilingual_retrieval.csv"
METRICS = ["image_retrieval_recall@1", "text_retrieval_recall@1", "mean_recall@1"]  # recall@5/10: open_clip's file
DATASETS = {"crossmodal3600": "crossmodal3600", "multilingual_mscoco_captions": "multilingual_mscoco"}


def main(src: Path) -> None:
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if digest != SHA256:
        print(f"note: {src} has sha256 {digest}, not the {SHA256[:12]} the committed table came from")
    rows, seen = [], set()
    with open(src, newline="") as f:
        for r in csv.DictReader(f):
            rel = release(r["model"], r["version"])
            if rel in seen:  # one set of weights under both spellings of its architecture
                continue
            seen.add(rel)
            values = {}
            for column, value in r.items():
                if column in ("model", "version", "avg") or not value:
                    continue
                dataset, metric, language = column.split(" ")
                values[(DATASETS[dataset], metric, language)] = float(value)
            per_language = [v for (d, m, lang), v in values.items() if lang != "avg"]
            assert abs(statistics.mean(per_language) - float(r["avg"])) < 1e-3, rel
            for (d, m, lang), v in values.items():
                if lang == "avg":
                    langs = [x for (dd, mm, x) in values if (dd, mm) == (d, m) and x != "avg"]
                    assert abs(statistics.mean(values[(d, m, x)] for x in langs) - v) < 1e-3, (rel, d, m)
                elif m == "image_retrieval_recall@1":
                    text = values[(d, "text_retrieval_recall@1", lang)]
                    rows.append(("open_clip", rel, d, lang, round(100 * v, 2), round(100 * text, 2),
                                 round(100 * (v + text) / 2, 2)))
    with open(OUT, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "release", "dataset", "language", *METRICS])
        w.writerows(rows)
    print(f"{len(rows)} rows from {len(seen)} releases -> {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
