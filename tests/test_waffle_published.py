"""WaffleCLIP's published results as data (tools/make_waffleclip_reference.py) and the report's view of them
(zeroshot/report/waffleclip.py): runs of their protocols beside their numbers, other runs saying why not."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, shared_path
from test_report import fixture_run, report_cfg
from zeroshot.report.build import build_report
from zeroshot.report.waffleclip import PUBLISHED_WAFFLECLIP, published_waffleclip

NUMBERS = ["top1_mean", "top1_std", "top1_max", "top1_min", "top5_mean", "top5_std", "top5_max", "top5_min"]
# WaffleCLIP's base_main.py default pattern, in zeroshot's form (zeroshot.prompts.descriptions.PAPER_CODE_PATTERN)
PATTERN = "A photo of a {c}, which (is/has/etc) {d}."


def source_rows(folder: Path) -> list[dict]:
    """The source CSVs read independently of the tool: arguments as a dict, then the eight numbers."""
    rows = []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as f:
            for rec in csv.reader(f):
                args = dict(p.lstrip(" ").split("=", 1) for p in rec[0].split(";"))
                rows.append({**args, **dict(zip(NUMBERS, map(float, rec[1:])))})
    return rows


@pytest.mark.cli
def test_the_committed_table_is_what_the_tool_makes_from_the_sources(tmp_path):
    src = shared_path("reference", "descriptions")
    out = tmp_path / "published_waffleclip.csv"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_waffleclip_reference.py"), str(src), str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == PUBLISHED_WAFFLECLIP.read_bytes()


def test_published_rows_equal_the_source_numbers():
    source = source_rows(shared_path("reference", "descriptions", "waffleclip"))
    ref = pd.read_csv(PUBLISHED_WAFFLECLIP, keep_default_na=False)
    assert len(ref) == len(source) == 285
    key = lambda r: (r["savename"], r["dataset"], r["model_size"])  # noqa: E731
    by_key = {(r.method, r.their_dataset, r.their_model): r for r in ref.itertuples()}
    for s in source:  # every row, every number, exactly
        r = by_key[key(s)]
        assert [getattr(r, n) for n in NUMBERS] == [s[n] for n in NUMBERS]
        assert r.mode == s["mode"] and str(r.waffle_count) == s.get("waffle_count", "")
        assert r.n_seeds == int(s.get("reps", 1))
    # a few rows by eye: the release and dataset names, and the protocol each row states
    checked = {("waffleclip", "imagenet", "ViT-B/32"): ("imagenet", "ViT-B-32/openai", 7, "", PATTERN),
               ("baselines", "pets", "RN50"): ("oxford_pets", "RN50/openai", 1, "A photo of a {}.", ""),
               ("baselines_gpt", "dtd", "ViT-L/14"): ("dtd", "ViT-L-14/openai", 1, "", PATTERN),
               ("waffleclip_concepts", "eurosat", "ViT-B/32"):
                   ("eurosat_all", "ViT-B-32/openai", 7, "", "A photo of a land use: a {c}, which (is/has/etc) {d}."),
               ("baselines", "cub", "ViT-L/14"): ("", "ViT-L-14/openai", 1, "A photo of a {}.", "")}
    for k, (dataset, release, seeds, template, pattern) in checked.items():
        r = by_key[k]
        assert (r.dataset, r.release, r.n_seeds, r.template, r.descriptor_pattern) == (dataset, release, seeds, template, pattern)
    waffle = by_key[("waffleclip", "imagenet", "ViT-B/32")]
    s = next(s for s in source if key(s) == ("waffleclip", "imagenet", "ViT-B/32"))
    assert (waffle.top1_mean, waffle.top1_std, waffle.waffle_count) == (s["top1_mean"], s["top1_std"], "15")


def class_run(root, stamp, class_prompts, templates=None, top1=0.635, n_images=None, phash=None, drop=()):
    """A ViT-B/32 ImageNet eval run whose metrics.json records `class_prompts` (and `templates`) as eval does."""
    run = fixture_run(root, "ViT-B-32/openai", "imagenet", top1, stamp, n_images=n_images, prompts_hash=phash or stamp)
    m = json.loads((run / "metrics.json").read_text())
    m["class_prompts"] = class_prompts
    if templates is not None:
        m["templates"] = templates
    for k in drop:
        m.pop(k)
    (run / "metrics.json").write_text(json.dumps(m))
    return run


# as run_record writes an eval's WaffleCLIP set (class_sets.resolve_class_prompt_sets' record)
WAFFLE15 = {"kind": "waffle", "seed": 0, "waffle": 15, "waffle_with_descriptions": False, "aggregate": "score_mean",
            "descriptor_pattern": PATTERN, "combine": "replace", "n_prompts": 30000}


def test_report_shows_waffleclip_beside_runs_of_its_protocol(tmp_path):
    root = tmp_path / "results"
    class_run(root, "2026-01-01_00-00-00", WAFFLE15, top1=0.6345)
    class_run(root, "2026-01-01_00-00-01", None, ["A photo of a {}."], top1=0.6190)  # the CLIP baseline's template
    class_run(root, "2026-01-01_00-00-02", None, ["a photo of a {}.", "a sketch of a {}."])
    class_run(root, "2026-01-01_00-00-03", {**WAFFLE15, "aggregate": "embedding_mean"})
    unrecorded = dict(WAFFLE15)
    unrecorded.pop("aggregate")
    class_run(root, "2026-01-01_00-00-04", unrecorded)
    class_run(root, "2026-01-01_00-00-05", WAFFLE15, n_images=1000)
    class_run(root, "2026-01-01_00-00-06", None, drop=("class_prompts",))  # before runs recorded class_prompts
    ref = published_waffleclip()
    ref = ref[(ref.release == "ViT-B-32/openai") & (ref.dataset == "imagenet")].set_index("method")
    dclip = {"kind": "descriptions", "seed": None, "descriptions_source": "descriptors_imagenet.json",
             "descriptions_sha256": ref.loc["baselines_gpt", "descriptors_sha256"], "descriptions_mode": "descriptors",
             "descriptor_pattern": PATTERN, "combine": "replace", "aggregate": "score_mean"}
    class_run(root, "2026-01-01_00-00-07", dclip, top1=0.6300)
    class_run(root, "2026-01-01_00-00-08", {**dclip, "descriptions_sha256": "0" * 64})  # another descriptor file
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.89, "2026-01-01_00-00-00")  # WaffleCLIP has no CIFAR-10

    out = Path(build_report(report_cfg(tmp_path, f"inputs=[{root}]"))["report_dir"])
    view = pd.read_csv(out / "waffleclip.csv")
    assert len(view) == 9 and "cifar10" not in set(view.dataset)
    waffle, base = ref.loc["waffleclip"], ref.loc["baselines"]

    compared = view[view.status == "compared"]
    assert len(compared) == 3
    d = compared[compared.published_method == "baselines_gpt (gpt_descriptions)"].iloc[0]
    assert d.published_mean == pytest.approx(ref.loc["baselines_gpt", "top1_mean"]) and d.protocol.startswith("descriptions")
    w = compared[compared.published_method == "waffleclip (waffle)"].iloc[0]
    assert w.published_mean == pytest.approx(waffle.top1_mean) and w.published_std == pytest.approx(waffle.top1_std)
    assert w.delta == pytest.approx(63.45 - waffle.top1_mean) and w.published_seeds == 7
    assert "ours one seed (0)" in w.note
    b = compared[compared.published_method == "baselines (clip)"].iloc[0]
    assert b.published_mean == pytest.approx(base.top1_mean) and b.delta == pytest.approx(61.90 - base.top1_mean)

    statuses = set(view.status)
    assert "protocol differs: 2 template(s), the CLIP baseline is the one template 'A photo of a {}.'" in statuses
    assert "protocol differs: aggregate 'embedding_mean', theirs 'score_mean'" in statuses
    assert "protocol not comparable: the run did not record its aggregate" in statuses
    assert "run not comparable: 1,000 of 50,000 images" in statuses
    assert any(s.startswith("protocol differs: descriptor file (sha256) '0000") for s in statuses)
    assert any(s.startswith("protocol not comparable: the run recorded no class_prompts") for s in statuses)

    md = (out / "report.md").read_text()
    assert "## WaffleCLIP's published results" in md
    assert f"| 63.45 | {waffle.top1_mean:.2f} ± {waffle.top1_std:.2f} (n=7) | waffleclip (waffle) | " \
           f"{63.45 - waffle.top1_mean:+.2f} | compared |" in md
    assert "protocol differs: 2 template(s)" in md


def test_no_waffleclip_section_without_a_published_pair(tmp_path):
    root = tmp_path / "results"
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.89, "2026-01-01_00-00-00")
    out = Path(build_report(report_cfg(tmp_path, f"inputs=[{root}]"))["report_dir"])
    assert not (out / "waffleclip.csv").exists()
    assert "WaffleCLIP" not in (out / "report.md").read_text()


def test_the_fixture_records_what_eval_records():
    """WAFFLE15 holds the keys run_record writes for an eval's WaffleCLIP set, so the view reads real runs too."""
    from omegaconf import OmegaConf
    from zeroshot.prompts.class_sets import resolve_class_prompt_sets

    p = OmegaConf.load(REPO / "configs" / "prompts" / "dataset.yaml")
    p.waffle, p.aggregate, p.descriptor_pattern = 15, "score_mean", PATTERN
    main = resolve_class_prompt_sets(p, ["cat", "dog"], ["a photo of a {}."])["main"]
    recorded = {"kind": main.kind, "seed": main.seed, **main.record, "n_prompts": sum(map(len, main.prompts))}
    assert recorded == {**WAFFLE15, "n_prompts": 60}
