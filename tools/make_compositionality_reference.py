"""Regenerate zeroshot/reference/published_compositionality.csv: published SugarCrepe, Winoground and ARO numbers
for OpenAI's and open_clip's releases (run once; the output is committed).

Each row is a number read from a paper or its repository, with the source it came from: source, release
(ARCH/TAG as open_clip names it), dataset (a configs/dataset name), metric (the run's metrics.json key), value (%).

The table is EMPTY on purpose. When it was made, none of the candidate numbers could be checked against their
source text from this machine: the Winoground paper's results table (CLIP ViT-B/32's text/image/group scores,
arXiv 2204.03162 Table 3) was not readable in full, SugarCrepe's README shows its results as images
(assets/sugarcrepe_eval.png), and ARO's repository publishes code, not a results table. A number recalled but
not read is not a fact, so none is written. Add a row to FACTS with its source once it has been read there.

    python tools/make_compositionality_reference.py
"""
import csv
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference" / "published_compositionality.csv"
COLUMNS = ["source", "release", "dataset", "metric", "value"]
# (source, release, dataset, metric, value in %): e.g.
# ("Thrush et al. 2022, Table 3", "ViT-B-32/openai", "winoground", "group_score", ...)
FACTS: list[tuple[str, str, str, str, float]] = []


def main() -> None:
    with OUT.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(FACTS)
    print(f"{len(FACTS)} rows -> {OUT}")


if __name__ == "__main__":
    main()
