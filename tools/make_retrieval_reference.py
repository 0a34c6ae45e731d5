"""Regenerate zeroshot/reference/published_retrieval.csv from open_clip's published tables (run once; the output
is committed).

Inputs: open_clip's docs/openclip_retrieval_results.csv (recall@1/5/10 both ways on Flickr30k and MSCOCO) and
docs/openclip_results.csv (each dataset's DataComp main metric, and the 38-dataset average). The copies used
for the committed file are from github.com/mlfoundations/open_clip at commit 29b90b8d (docs/, Nov 2023);
../shared/reference holds neither, only the classification table.

    python tools/make_retrieval_reference.py [DIR]     # DIR holds the two CSVs (default ../shared/reference)

Rows: source (open_clip), release (ARCH/TAG, -quickgelu dropped as in make_reference.py), dataset (flickr30k,
mscoco, winogavil, average_38), metric, value (%). The tool checks two facts on every model as it goes:
open_clip's Flickr/MSCOCO main value is the mean of its image- and text-retrieval recall@1 (DataComp's
mean_recall@1), and its 38-dataset average is the plain mean of the 38 main values.
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import release, write_table  # noqa: E402

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "reference")
OUT = Path(__file__).resolve().parents[1] / "zeroshot" / "reference" / "published_retrieval.csv"
SETS = {"Flickr": "flickr30k", "MSCOCO": "mscoco"}
# open_clip names directions by what is retrieved: "image retr." = text -> image, "text retr." = image -> text
DIRECTIONS = {"image retr.": "image_retrieval_recall", "text retr.": "text_retrieval_recall"}
AVERAGE = "Average perf. on 38 datasets"
NOT_TASKS = {"name", "pretrained", "params (M)", "FLOPs (B)", AVERAGE}


def main() -> None:
    rows, seen = [], set()
    with open(SRC / "openclip_results.csv") as f:
        main_table = {(r["name"], r["pretrained"]): r for r in csv.DictReader(f)}
    with open(SRC / "openclip_retrieval_results.csv") as f:
        for r in csv.DictReader(f):
            rel = release(r["name"], r["pretrained"])
            overall = main_table.get((r["name"], r["pretrained"]))
            for column, dataset in SETS.items():
                values = {f"{metric}@{k}": float(r[f"{column} {direction} R@{k}"])
                          for direction, metric in DIRECTIONS.items() for k in (1, 5, 10)}
                values["mean_recall@1"] = (values["text_retrieval_recall@1"] + values["image_retrieval_recall@1"]) / 2
                if overall and overall.get(column):
                    assert abs(values["mean_recall@1"] - float(overall[column])) < 1e-4, (rel, column)
                rows += [("open_clip", rel, dataset, m, round(100 * v, 2)) for m, v in values.items()]
            if overall:
                tasks = [float(v) for k, v in overall.items() if k not in NOT_TASKS and v]
                if len(tasks) == 38:
                    assert abs(sum(tasks) / 38 - float(overall[AVERAGE])) < 1e-3, rel
                rows.append(("open_clip", rel, "winogavil", "jaccard_score_10-12", round(100 * float(overall["WinoGAViL"]), 2)))
                rows.append(("open_clip", rel, "average_38", "average", round(100 * float(overall[AVERAGE]), 2)))
    unique = []
    for row in rows:  # one set of weights may be listed under both spellings of its architecture
        if row[:4] not in seen:
            seen.add(row[:4])
            unique.append(row)
    write_table(OUT, unique)


if __name__ == "__main__":
    main()
