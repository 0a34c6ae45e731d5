"""Regenerate zeroshot/reference/published_waffleclip.csv from WaffleCLIP's published results (run once; the
output is committed).

Inputs: ExplainableML/WaffleCLIP `results/*.csv` at 7a1b8ee (Roth et al., ICCV 2023; MIT), as copied to
../shared/reference/descriptions/waffleclip/, and the DCLIP descriptor files WaffleCLIP ships
(../shared/reference/descriptions/dclip/), whose sha256 names the descriptions a "gpt" row used.

    python tools/make_waffleclip_reference.py [DIR [OUT]]   # DIR holds waffleclip/ and dclip/ (default
                                                            # ../shared/reference/descriptions); OUT: another file

Each source row is `savename=...; dataset=...; mode=...; [key=value; ...] model_size=...` (the command-line
arguments of that run, joined), then top-1 mean, std, max, min and top-5 mean, std, max, min in percent, over
`reps` seeds. An argument a row does not state took its default in WaffleCLIP's base_main.py; the defaults that
decide the protocol are in DEFAULTS below, so every output row states its whole protocol.

Rows: method (the savename: their file), mode, their_dataset, dataset (zeroshot's name; empty for CUB-200 and
Places365, which zeroshot has no config for: kept, so the table stays a faithful copy), release, their_model,
n_seeds, waffle_count, randomization_budget, label_before_text, template (the CLIP baseline's one template),
descriptor_pattern (zeroshot's {c}/{d} form, with DCLIP's verb slot), aggregate, descriptors_file,
descriptors_sha256, split and n_images (the images their dataset loader reads), then the eight numbers.
"""
import csv
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from zeroshot.errors import TextFileError  # noqa: E402
from zeroshot.log import log  # noqa: E402
from zeroshot.prompts.descriptions import PAPER_CODE_PATTERN, VERB_SLOT  # noqa: E402

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else REPO.parent / "shared" / "reference" / "descriptions")
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "zeroshot" / "reference" / "published_waffleclip.csv"

# base_main.py's argument defaults at 7a1b8ee, for the arguments a row may leave out. reps=1: a row without
# `reps` is one run (its std is 0.0, checked below). aggregate "mean" over a class's prompt similarities is
# zeroshot's score_mean (no row sets --merge_predictions, which would be embedding_mean).
DEFAULTS = {"reps": 1, "label_before_text": "A photo of a ", "label_after_text": ".", "aggregate": "score_mean"}

# Their dataset name -> zeroshot's config name, with the split and image count their loader (waffle_tools.setup)
# reads. EuroSAT: torchvision's EuroSAT without a split, all 27,000 images, which is zeroshot's eurosat_all (not
# dataset=eurosat, the 5,400-image VTAB test split). CUB-200 and Places365: no zeroshot config (dataset empty).
DATASETS = {
    "imagenet": ("imagenet", "val", 50000), "imagenetv2": ("imagenetv2", "matched-frequency", 10000),
    "dtd": ("dtd", "test (partition 1)", 1880), "food101": ("food101", "test", 25250),
    "pets": ("oxford_pets", "test", 3669), "eurosat": ("eurosat_all", "all", 27000),
    "cub": ("", "test", 5794), "places365": ("", "val", 36500),
}
# Each dataset's descriptor file in their descriptors/ (ImageNetV2 reuses ImageNet's, as their loader does).
DESCRIPTOR_FILE = {name: f"descriptors_{'imagenet' if name == 'imagenetv2' else name}.json" for name in DATASETS}
# Their --model_size (OpenAI's `clip` package names) -> zeroshot's release names (zeroshot/reference/published.csv).
RELEASES = {"RN50": "RN50/openai", "ViT-B/32": "ViT-B-32/openai", "ViT-L/14": "ViT-L-14/openai"}
# Modes whose prompts go through the descriptor sentence; "clip" is the class name in one template.
DESCRIPTOR_MODES = {"gpt_descriptions", "random_descriptions", "scrambled_descriptions", "shared_random_descriptions",
                    "swapped_descriptions", "waffle", "waffle_and_gpt"}
NUMBERS = ["top1_mean", "top1_std", "top1_max", "top1_min", "top5_mean", "top5_std", "top5_max", "top5_min"]
COLUMNS = ["method", "mode", "their_dataset", "dataset", "release", "their_model", "n_seeds", "waffle_count",
           "randomization_budget", "label_before_text", "template", "descriptor_pattern", "aggregate",
           "descriptors_file", "descriptors_sha256", "split", "n_images", *NUMBERS]


def parse_args(text: str, where: str) -> dict:
    """`key=value; key=value` -> dict; values keep their spaces ("A photo of a bird: a " ends in one)."""
    out = {}
    for part in text.split(";"):
        key, sep, value = part.lstrip(" ").partition("=")
        if not sep or key in out:
            raise TextFileError(f"{where}: cannot read argument {part!r} (expected key=value once each)")
        out[key] = value
    return out


def protocol(args: dict, where: str) -> dict:
    """What a row's prompts were, from its stated arguments and base_main.py's defaults."""
    before = args.get("label_before_text", DEFAULTS["label_before_text"])
    after = DEFAULTS["label_after_text"]
    mode = args["mode"]
    row = {"label_before_text": before, "template": "", "descriptor_pattern": "", "aggregate": ""}
    if mode == "clip":  # one prompt per class: no aggregation
        row["template"] = f"{before}{{}}{after}"  # label_before_text + class name + label_after_text
    elif mode in DESCRIPTOR_MODES:
        row["aggregate"] = DEFAULTS["aggregate"]
        # "<before><class>, which is/has <descriptor><after>": zeroshot writes the verb choice as VERB_SLOT
        row["descriptor_pattern"] = f"{before}{{c}}, which {VERB_SLOT} {{d}}{after}"
    else:
        raise TextFileError(f"{where}: mode={mode!r} is not one this tool knows ({', '.join(sorted(DESCRIPTOR_MODES | {'clip'}))})")
    return row


def main() -> None:
    # the defaults above must compose the pattern zeroshot already names as WaffleCLIP's: one fact, checked
    assert protocol({"mode": "waffle"}, "defaults")["descriptor_pattern"] == PAPER_CODE_PATTERN
    files = sorted((SRC / "waffleclip").glob("*.csv"))
    if not files:
        raise TextFileError(f"no WaffleCLIP results under {SRC / 'waffleclip'}: pass the folder that holds waffleclip/ and dclip/")
    sha = {name: hashlib.sha256((SRC / "dclip" / f).read_bytes()).hexdigest() for name, f in DESCRIPTOR_FILE.items()}
    rows = []
    for path in files:
        with open(path, newline="") as f:
            for i, rec in enumerate(csv.reader(f), 1):
                where = f"{path.name} line {i}"
                if len(rec) != 1 + len(NUMBERS):
                    raise TextFileError(f"{where}: {len(rec)} fields, expected the arguments and {len(NUMBERS)} numbers")
                args = parse_args(rec[0], where)
                numbers = dict(zip(NUMBERS, map(float, rec[1:])))
                if args.get("savename") != path.stem:
                    raise TextFileError(f"{where}: savename={args.get('savename')!r} is not the file's name")
                if args["dataset"] not in DATASETS or args["model_size"] not in RELEASES:
                    raise TextFileError(f"{where}: dataset {args['dataset']!r} or model {args['model_size']!r} has no entry "
                                        "in this tool's tables: add it to DATASETS / RELEASES")
                n_seeds = int(args.get("reps", DEFAULTS["reps"]))
                if n_seeds == 1 and numbers["top1_std"] != 0.0:
                    raise TextFileError(f"{where}: one run, yet top-1 std {numbers['top1_std']}")
                dataset, split, n_images = DATASETS[args["dataset"]]
                descriptor_mode = args["mode"] != "clip"
                rows.append({
                    "method": path.stem, "mode": args["mode"], "their_dataset": args["dataset"], "dataset": dataset,
                    "release": RELEASES[args["model_size"]], "their_model": args["model_size"], "n_seeds": n_seeds,
                    "waffle_count": args.get("waffle_count", ""),
                    "randomization_budget": args.get("randomization_budget", ""), **protocol(args, where),
                    # the clip baseline reads the descriptor file only for its class names
                    "descriptors_file": DESCRIPTOR_FILE[args["dataset"]] if descriptor_mode else "",
                    "descriptors_sha256": sha[args["dataset"]] if descriptor_mode else "",
                    "split": split, "n_images": n_images, **numbers,
                })
                unknown = set(args) - {"savename", "dataset", "mode", "model_size", "reps", "waffle_count",
                                       "randomization_budget", "label_before_text"}
                if unknown:
                    raise TextFileError(f"{where}: arguments {sorted(unknown)} are not recorded by this tool")
    with open(OUT, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    dropped = sorted({r["their_dataset"] for r in rows if not r["dataset"]})
    log.info("%d rows from %d files -> %s (kept with dataset empty, no zeroshot config: %s)",
             len(rows), len(files), OUT, ", ".join(dropped))


if __name__ == "__main__":
    main()
