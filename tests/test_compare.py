"""Paired comparison: McNemar and the bootstrap against scipy and brute force, pairing by image identity,
Holm across datasets, what changed, ranks, and `zeroshot compare` / `report` end to end on real runs."""
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zeroshot.metrics import paired as cmp
from zeroshot.metrics.classification import macro_f1, mean_average_precision
from conftest import REPO

import scipy.stats as scipy_stats  # a declared test dependency


def synthetic(name, n=200, c=6, acc=0.6, seed=0, keys=None, labels=None, fingerprint="fp", split="test", metric="top1"):
    """A run whose argmax is right on about `acc` of the images, with random other scores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n) if labels is None else labels
    logits = rng.normal(size=(n, c))
    right = rng.random(n) < acc
    logits[np.arange(n), labels] = np.where(right, logits.max(1) + 1, logits.min(1) - 1)
    keys = np.array([f"img/{i:04d}.png" for i in range(n)], dtype=object) if keys is None else keys
    return cmp.RunImages(name, f"/runs/{name}", fingerprint, split, keys, labels, logits, metric,
                         [f"class{k}" for k in range(c)], metadata=rng.integers(0, 3, (n, 2)),
                         multilabel=((rng.random((n, c)) < 0.3) | (np.arange(c)[None] == labels[:, None])
                                     if metric == "mean_average_precision" else None),
                         groups={"field": 1, "exclude": [2]})


def pair_ab(n=200, **kw):
    a = synthetic("A", n, acc=0.7, seed=1, **kw)
    b = synthetic("B", n, acc=0.55, seed=2, labels=a.labels, **kw)
    return a, b


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (0, 1), (1, 0), (3, 3), (7, 2), (2, 12), (40, 61), (1500, 1620), (5000, 5400)])
def test_mcnemar_is_scipys_binomtest(only_a, only_b):
    n = only_a + only_b
    expected = 1.0 if n == 0 else scipy_stats.binomtest(only_a, n, 0.5).pvalue
    assert cmp.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert cmp.mcnemar_exact(only_a, only_b) == cmp.mcnemar_exact(only_b, only_a)


def brute_resamples(n, n_boot, stream):
    return np.random.default_rng(stream).integers(0, n, size=(n_boot, n))


def test_per_image_bootstrap_and_counts_equal_brute_force():
    a, b = pair_ab()
    rows = cmp.compare_pair(a, b, n_boot=300, seed=5)
    assert [r["metric"] for r in rows] == ["top1"]
    r = rows[0]
    ra, rb = a.logits.argmax(1) == a.labels, b.logits.argmax(1) == b.labels
    counts = {"both_right": 0, "only_a": 0, "only_b": 0, "both_wrong": 0}
    for x, y in zip(ra, rb):
        counts["both_right" if x and y else "only_a" if x else "only_b" if y else "both_wrong"] += 1
    assert {k: r[k] for k in counts} == counts
    assert r["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(counts["only_a"], counts["only_a"] + counts["only_b"]).pvalue)
    assert r["diff"] == pytest.approx(ra.mean() - rb.mean())
    idx = brute_resamples(200, 300, cmp.dataset_seed(5, "fp"))
    boot = [sum(int(ra[i]) - int(rb[i]) for i in row) / 200 for row in idx]
    np.testing.assert_allclose(r["boot"], boot, atol=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)))
    assert r["ci_low"] < r["diff"] < r["ci_high"] and r["n_boot"] == 300 and r["seed"] == 5
    # the same replicates whatever the block size the indices are drawn in
    blocks = list(cmp.resample_indices(200, 300, cmp.dataset_seed(5, "fp"), chunk_elements=7 * 200))
    assert len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate(blocks), idx)


def brute_metric(run, metric, rows):
    y, pred = run.labels[rows], run.logits.argmax(1)[rows]
    if metric == "mean_per_class_recall":
        return np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)])
    if metric == "macro_f1":
        return macro_f1(pred, y)
    if metric == "worst_group_top5":
        top5 = np.argsort(-run.logits[rows], axis=1, kind="stable")[:, :5]
        right = np.array([y[i] in top5[i] for i in range(len(rows))])
        g = run.metadata[rows, 1]
        return min(right[g == k].mean() for k in np.unique(g) if k != 2)
    if metric == "mean_average_precision":
        return mean_average_precision(run.logits[rows], run.multilabel[rows])
    raise AssertionError(metric)


@pytest.mark.parametrize("metric", ["mean_per_class_recall", "macro_f1", "worst_group_top5", "mean_average_precision"])
def test_set_metric_bootstrap_equals_brute_force_and_has_no_mcnemar(metric):
    a, b = pair_ab(n=120, metric=metric)
    rows = cmp.compare_pair(a, b, n_boot=60, seed=1)
    tested, own = rows
    assert tested["metric"] == "top1" and "mcnemar_p" in tested
    assert own["metric"] == metric and not own["per_image"] and "mcnemar_p" not in own and "only_a" not in own
    everything = np.arange(120)
    assert own["diff"] == pytest.approx(brute_metric(a, metric, everything) - brute_metric(b, metric, everything))
    idx = brute_resamples(120, 60, cmp.dataset_seed(1, "fp"))
    boot = [brute_metric(a, metric, row) - brute_metric(b, metric, row) for row in idx]
    np.testing.assert_allclose(own["boot"], boot, atol=1e-12)
    assert (own["ci_low"], own["ci_high"]) == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)))


def test_pairing_follows_identity_not_row_order():
    a, b = pair_ab()
    perm = np.random.default_rng(9).permutation(200)
    shuffled = b.take(perm)  # B's predictions.csv in another order: the same images
    assert (shuffled.keys != b.keys).any()
    straight, reordered = cmp.compare_pair(a, b, 200, 0)[0], cmp.compare_pair(a, shuffled, 200, 0)[0]
    for key in ("diff", "only_a", "only_b", "both_right", "mcnemar_p", "ci_low", "ci_high"):
        assert straight[key] == reordered[key], key
    # pairing by position would have compared image i of A with image perm[i] of B
    positional = (a.logits.argmax(1) == a.labels) & ~(shuffled.logits.argmax(1) == shuffled.labels)
    assert positional.sum() != straight["only_a"]


def test_pairs_whose_images_differ_are_refused():
    a, b = pair_ab()
    fewer = b.take(np.arange(2, 200))
    other = synthetic("C", 199, seed=3, labels=np.r_[a.labels[:198], 0],
                      keys=np.r_[a.keys[:198], np.array(["img/new.png"], dtype=object)])
    with pytest.raises(cmp.PairingError, match=r"2 images only in A \(e.g. img/0000.png\), 0 only in B"):
        cmp.compare_pair(a, fewer)
    with pytest.raises(cmp.PairingError, match=r"2 images only in A .*1 only in B \(e.g. img/new.png\)"):
        cmp.compare_pair(a, other)
    with pytest.raises(cmp.PairingError, match=r"dataset fingerprints differ \(fp vs fp2\)"):
        cmp.compare_pair(a, synthetic("B", 200, fingerprint="fp2", labels=a.labels))
    with pytest.raises(cmp.PairingError, match=r"splits differ \(test vs train\)"):
        cmp.compare_pair(a, synthetic("B", 200, split="train", labels=a.labels))
    relabelled = synthetic("B", 200, labels=(a.labels + 1) % 6)
    with pytest.raises(cmp.PairingError, match="labels differ on 200 images"):
        cmp.compare_pair(a, relabelled)
    assert issubclass(cmp.PairingError, cmp.ReportError)


def test_holm_over_datasets_decides_wins_ties_losses():
    rng = np.random.default_rng(0)
    # unadjusted, all four are below 0.05; after Holm only the smallest two are
    ps, diffs = [0.03, 0.004, 0.012, 0.045], [0.02, 0.05, -0.03, 0.01]
    rows = [{"mcnemar_p": p, "diff": d, "boot": d + rng.normal(0, 0.01, 400)} for p, d in zip(ps, diffs)]
    s = cmp.suite_summary(rows, alpha=0.05)
    # by hand: 4 x 0.004, 3 x 0.012, then max(2 x 0.03, 0.036), then max(1 x 0.045, 0.06)
    assert [r["p_holm"] for r in rows] == pytest.approx([0.06, 0.016, 0.036, 0.06])
    assert [r["verdict"] for r in rows] == ["tie", "win", "loss", "tie"]
    assert (s["wins"], s["ties"], s["losses"], s["n_datasets"]) == (1, 2, 1, 4)
    assert s["mean_diff"] == pytest.approx(np.mean(diffs))
    mean_boot = np.mean([r["boot"] for r in rows], axis=0)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((np.quantile(mean_boot, 0.025), np.quantile(mean_boot, 0.975)))


def test_suite_ci_resamples_each_dataset_independently():
    pairs = [pair_ab(n=150, fingerprint=f"fp{i}") for i in range(3)]
    rows = [cmp.compare_pair(a, b, 200, 0)[0] for a, b in pairs]
    assert not np.allclose(rows[0]["boot"], rows[1]["boot"])  # one stream per dataset
    s = cmp.suite_summary(rows)
    brute = np.mean([[np.mean((a.logits.argmax(1) == a.labels)[i] * 1.0 - (b.logits.argmax(1) == b.labels)[i])
                      for i in brute_resamples(150, 200, cmp.dataset_seed(0, a.fingerprint))] for a, b in pairs], axis=0)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((np.quantile(brute, 0.025), np.quantile(brute, 0.975)))


def test_what_changed_counts():
    n, c = 60, 3
    labels = np.repeat(np.arange(c), 20)
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)

    def run(name, pred):
        logits = np.full((n, c), -5.0)
        logits[np.arange(n), pred] = 5.0
        return cmp.RunImages(name, name, "fp", "test", keys, labels, logits, "top1", ["cat", "dog", "bird"])

    pred_a = labels.copy()
    pred_a[20:30] = 2  # A: 10 dogs called birds
    pred_b = labels.copy()
    pred_b[0:4] = 1  # B: 4 cats called dogs; the dogs are right
    ch = cmp.what_changed(run("A", pred_a), run("B", pred_b))
    assert ch["classes"] == [
        {"class": "dog", "support": 20, "right_a": 10, "right_b": 20, "recall_change": -0.5},
        {"class": "cat", "support": 20, "right_a": 20, "right_b": 16, "recall_change": 0.2}]
    assert ch["appear"] == [{"true": "cat", "predicted": "dog", "count_a": 0, "count_b": 4}]
    assert ch["vanish"] == [{"true": "dog", "predicted": "bird", "count_a": 10, "count_b": 0}]


def test_ranks_share_ties():
    assert cmp.ranks({"a": 0.9, "b": 0.8, "c": 0.9, "d": math.nan}) == {"a": 1.5, "c": 1.5, "b": 3.0}


# -- end to end: real runs of the tiny checkpoint, two prompt sets on two image folders --------------------------

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, tiny_checkpoint):
    """Two sets of weights with the same prompts on two image folders, and a second prompt set for one of them."""
    from conftest import TINY_VIT, random_model, save_openai_archive
    from datagen import write_imagefolder
    from test_eval import run_cfg
    from zeroshot.commands.evaluate import evaluate

    tmp = tmp_path_factory.mktemp("compare")
    other = save_openai_archive(random_model(TINY_VIT, seed=7), tmp / "tiny-other.pt")
    runs = []
    for folder, classes in (("pets", ["cat", "dog", "bird", "fish"]), ("cars", ["red car", "blue car", "bus"])):
        write_imagefolder(tmp / folder, classes, per_class=8, seed=len(folder))
        data = ["dataset=imagefolder", f"dataset.root={tmp / folder}"]
        for ckpt in (tiny_checkpoint, other):
            runs.append(evaluate(run_cfg(tmp, ckpt, *data, "prompts=simple")))
        if folder == "pets":
            runs.append(evaluate(run_cfg(tmp, tiny_checkpoint, *data, "prompts=classname")))
    return tmp, runs


@pytest.mark.cli
def test_compare_cli_end_to_end(real_runs):
    tmp, runs = real_runs
    out = tmp / "cmp"
    r = subprocess.run([sys.executable, "-m", "zeroshot", "compare", str(tmp / "results"), f"output_dir={out}",
                        "compare.n_boot=200"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tiny-other.pt vs tiny-vit.pt [simple]: " in r.stdout and "over 2 datasets" in r.stdout
    folder = next(out.iterdir())
    table = pd.read_csv(folder / "compare.csv")
    per_dataset = table[table.metric.notna() & ~table.dataset.str.startswith("(mean")]
    assert len(per_dataset) == 4 and set(per_dataset.n_boot) == {200}  # 3 pairs on pets, 1 on cars
    for row in per_dataset.itertuples():  # counts and p from the runs' own predictions, paired by path
        ra, rb = (pd.read_csv(Path(d) / "predictions.csv").set_index("path") for d in (row.run_a, row.run_b))
        rb = rb.loc[ra.index]
        right_a, right_b = ra.prediction == ra.label, rb.prediction == rb.label
        assert row.only_a == int((right_a & ~right_b).sum()) and row.only_b == int((~right_a & right_b).sum())
        k, n = int(row.only_a), int(row.only_a + row.only_b)
        assert row.mcnemar_p == pytest.approx(scipy_stats.binomtest(k, n).pvalue if n else 1.0)
        assert row.diff == pytest.approx(right_a.mean() - right_b.mean())
    suite = table[table.dataset.str.startswith("(mean")]
    spans = suite[suite.n_datasets == 2].iloc[0]
    pair_rows = per_dataset[(per_dataset.system_a == spans.system_a) & (per_dataset.system_b == spans.system_b)]
    assert spans["diff"] == pytest.approx(pair_rows["diff"].mean())
    assert spans.wins + spans.ties + spans.losses == 2
    md = (folder / "compare.md").read_text()
    for text in ("## Paired comparisons", "McNemar", "Holm", "## Suite: model x dataset", "mean rank", "## Wins / ties / losses"):
        assert text in md, text
    figures = sorted(folder.glob("compare_*.png"))
    assert len(figures) == 3 and all(f.stat().st_size > 0 and f"]({f.name})" in md for f in figures)
    # a single run has nothing to be compared with: one line that says so
    r = subprocess.run([sys.executable, "-m", "zeroshot", "compare", runs[0]["run_dir"], f"output_dir={out}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 1 and "Nothing to compare" in r.stderr


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
def test_report_section_opens_in_headless_chromium(real_runs, tmp_path):
    from test_report import report_cfg
    from zeroshot.report.build import build_report

    tmp, runs = real_runs
    out = Path(build_report(report_cfg(tmp_path, f"inputs=[{tmp / 'results'}]", "compare.n_boot=100"))["report_dir"])
    md = (out / "report.md").read_text()
    assert "## Paired comparisons" in md and "## Calibration" in md and "## Wins / ties / losses" in md
    page = (out / "report.html").read_text()
    n_reliability = page.count("class='reliability'")
    assert n_reliability == 5 and "Paired comparisons" in page and "class='legend'" in page
    browser = chromium()
    if browser is None:  # no browser (a system package, not a Python one): every inlined image must still decode
        import base64
        import io
        import re

        from PIL import Image

        blobs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
        assert len(blobs) == page.count("<img ") >= n_reliability + 1
        for blob in blobs:
            w, h = Image.open(io.BytesIO(base64.b64decode(blob))).size
            assert w > 100 and h > 100
        return
    # the page as the browser built it: every <img> decoded to a real size
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => { for (const i of document.images)"
                                             " i.setAttribute('data-size', i.naturalWidth + 'x' + i.naturalHeight); "
                                             "document.body.setAttribute('data-ready', document.images.length); });"
                                             "</script></body>"))
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
                        probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    import re

    sizes = re.findall(r'data-size="(\d+)x(\d+)"', r.stdout)
    n_images = page.count("<img ")
    assert len(sizes) == n_images >= n_reliability + 1
    assert all(int(w) > 100 and int(h) > 100 for w, h in sizes)
    assert "Paired comparisons" in r.stdout and "Wins / ties / losses" in r.stdout


def write_run(root: Path, run: cmp.RunImages, model: str, stamp: str, sha: str, order=None) -> Path:
    """A run directory as `eval` writes it (metrics.json, logits.npz, predictions.csv, per_class.csv), rows in `order`."""
    import json

    order = np.arange(len(run.labels)) if order is None else order
    d = root / model / stamp
    d.mkdir(parents=True)
    pred = run.logits.argmax(1)
    pd.DataFrame({"index": order, "path": run.keys[order], "label": run.labels[order], "prediction": pred[order]}).to_csv(
        d / "predictions.csv", index=False)
    np.savez_compressed(d / "logits.npz", logits=run.logits[order], labels=run.labels[order], indices=order)
    pd.DataFrame({"class_index": range(len(run.classnames)), "class": run.classnames}).to_csv(d / "per_class.csv", index=False)
    top1 = float((pred == run.labels).mean())
    (d / "metrics.json").write_text(json.dumps({
        "top1": top1, "top5": 1.0, "mean_per_class_recall": top1, "main_metric": top1, "metric": run.metric, "model": model,
        "dataset": "wds_set", "dataset_label": "wds_set", "dataset_fingerprint": run.fingerprint, "split": run.split,
        "prompts": "p", "prompts_hash": "h", "prompts_label": "p#h", "checkpoint_sha256": sha, "timestamp": stamp}))
    return d


def test_comparison_from_run_dirs_marks_significance_and_names_refusals(tmp_path):
    from zeroshot.report.compare import build_comparison
    from zeroshot.report.compare_render import html_section, markdown_lines
    from zeroshot.report.runs import load_runs, reproducibility

    n = 200
    keys = np.array([f"shard-{i // 50:03d}.tar:{i:06d}" for i in range(n)], dtype=object)  # webdataset shard:key
    a = synthetic("A", n, acc=0.9, seed=1, keys=keys)
    b = synthetic("B", n, acc=0.3, seed=2, keys=keys, labels=a.labels)
    c = synthetic("C", n, acc=0.3, seed=3, keys=keys, labels=a.labels)
    write_run(tmp_path, a, "strong", "2026-01-01_00-00-00", "aa" * 32)
    write_run(tmp_path, b, "weak", "2026-01-01_00-00-00", "bb" * 32, order=np.random.default_rng(0).permutation(n))
    write_run(tmp_path, c.take(np.arange(3, n)), "partial", "2026-01-01_00-00-00", "cc" * 32)  # 3 images missing
    table, _ = reproducibility(load_runs([tmp_path]), 0.001)
    comp = build_comparison(table, n_boot=200, seed=0)
    row, = [r for r in comp.rows if {r["system_a"], r["system_b"]} == {"strong", "weak"}]
    assert row["verdict"] == "win" and row["p_holm"] < 1e-10 and (row["system_a"], row["system_b"]) == ("strong", "weak")
    expected = cmp.compare_pair(a, b, 200, 0)[0]  # the same numbers as on the arrays, whatever the files' row order
    assert row["diff"] == expected["diff"] and row["only_a"] == expected["only_a"] and row["ci_low"] == expected["ci_low"]
    refused = [note for note in comp.notes if "partial" in note]
    assert len(refused) == 2 and all("3 images only in A" in note or "3 only in B" in note for note in refused)
    md = "\n".join(markdown_lines(comp))
    top1_a, top1_b = (float(np.mean(r.logits.argmax(1) == r.labels)) for r in (a, b))
    assert f"| wds_set | top1 | {100 * top1_a:.2f} | {100 * top1_b:.2f} | {100 * (top1_a - top1_b):+.2f} |" in md
    assert " | * | " in md and "`*` marks" in md
    assert comp.wtl.loc["strong", "weak"] == "1/0/0" and comp.wtl.loc["weak", "strong"] == "0/0/1"
    best = comp.ranks.iloc[0]
    assert best.system == "strong" and best["mean rank"] == 1 and best["wds_set"] == f"{100 * top1_a:.2f} (1)"
    page = html_section(comp)
    assert "<tr class='sig'>" in page and "class='legend'" in page


@pytest.mark.parametrize("given", [("zeta", "alpha"), ("alpha", "zeta")])
def test_compare_keeps_the_users_order_and_every_difference_is_a_minus_b(tmp_path, given):
    """`compare A B` says A - B whatever the names sort as: the pair, the table, the suite line and what changed."""
    from zeroshot.report.compare import build_comparison
    from zeroshot.report.compare_render import markdown_lines
    from zeroshot.report.runs import load_runs, reproducibility

    runs = {"zeta": synthetic("zeta", acc=0.9, seed=1), "alpha": synthetic("alpha", acc=0.3, seed=2)}
    runs["alpha"].labels = runs["zeta"].labels
    for name, sha in (("zeta", "aa" * 32), ("alpha", "bb" * 32)):
        write_run(tmp_path / name, runs[name], name, "2026-01-01_00-00-00", sha)
    table, _ = reproducibility(load_runs([tmp_path / given[0], tmp_path / given[1]]), 0.001)
    comp = build_comparison(table, n_boot=50, seed=0)
    a, b = given
    row, = comp.rows
    assert (row["system_a"], row["system_b"]) == (a, b) and comp.suite[0]["system_a"] == a
    acc = {k: float(np.mean(r.logits.argmax(1) == r.labels)) for k, r in runs.items()}
    assert row["diff"] == pytest.approx(acc[a] - acc[b])
    change, = comp.changes
    for x in change["classes"]:
        assert x["recall_change"] == pytest.approx((x["right_a"] - x["right_b"]) / x["support"])
    assert (change["classes"][0]["recall_change"] > 0) == (a == "zeta")
    assert "| class | A | B | A - B |" in "\n".join(markdown_lines(comp))
