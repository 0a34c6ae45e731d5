"""A newcomer's first hour: `--help` and `--version`, the summary line, published templates on one's own class
names, the error galleries (a run's and a comparison's), and the report in a real browser (headless Chromium)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import QUIET, REPO, make_cfg
from datagen import write_imagefolder

CHROMIUM = Path("/usr/bin/chromium")


def cfg_for(tmp_path, checkpoint, images, *overrides):
    return make_cfg("eval", "dataset=imagefolder", f"dataset.root={images}", *QUIET, "batch_size=16", *overrides,
                    tmp_path=tmp_path, checkpoint=checkpoint)


# ---------------------------------------------------------------------- the command line

@pytest.mark.cli
def test_help_lists_every_command_in_a_sentence_without_torch():
    code = ("import sys; from zeroshot.__main__ import main, SUMMARIES; rc = main(['--help']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    from zeroshot.__main__ import COMMANDS, SUMMARIES

    assert set(SUMMARIES) == {c for c in COMMANDS if not c.startswith("suite-")} | {"models"}
    for command, sentence in SUMMARIES.items():
        assert re.search(rf"^  {re.escape(command)} +{re.escape(sentence)}$", r.stdout, re.M), command
        assert sentence.endswith(".") and sentence[0].isupper()
    assert r.stdout.strip().endswith("NO-TORCH 0")


@pytest.mark.cli
@pytest.mark.wheel
def test_version_names_the_commit_from_a_checkout_and_from_a_build(tmp_path, monkeypatch):
    import zeroshot
    from zeroshot import paths

    r = subprocess.run([sys.executable, "-m", "zeroshot", "--version"], capture_output=True, text=True, cwd=REPO, timeout=120)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert r.returncode == 0 and r.stdout.strip() == f"zeroshot {zeroshot.__version__} (commit {head})"
    # an installed copy (no checkout around it): the commit setup.py's build step wrote
    build = tmp_path / "build"
    b = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(build)], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    assert (build / "zeroshot" / "_commit.txt").read_text().strip() == head
    installed = tmp_path / "site-packages" / "zeroshot"
    installed.mkdir(parents=True)
    (installed / "_commit.txt").write_text(head + "\n")
    monkeypatch.setattr(paths, "_HERE", installed)
    monkeypatch.setattr(paths, "BUILD_COMMIT", installed / "_commit.txt")
    assert paths.git_commit() == head
    (installed / "_commit.txt").unlink()
    assert paths.git_commit() is None  # an sdist's build: nothing recorded, and nothing made up


def test_published_templates_on_your_own_class_names(tmp_path):
    import types

    from zeroshot.errors import PromptError
    from zeroshot.pipeline import resolve_classnames, resolve_prompts

    cifar = json.loads((REPO / "prompts" / "cifar10.json").read_text())
    images = write_imagefolder(tmp_path / "imgs", ["my_cat", "my_dog"], per_class=1)
    cfg = cfg_for(tmp_path, "x.pt", images, "prompts.templates_from=cifar10")
    dataset = types.SimpleNamespace(classes=["my_cat", "my_dog"], shipped_templates=None)
    pset = resolve_prompts(cfg, dataset)
    assert pset.templates == cifar["templates"] and len(pset.templates) == 18 and pset.name == "cifar10_templates"
    assert resolve_classnames(cfg, pset, dataset) == ["my cat", "my dog"]
    with pytest.raises(PromptError, match=r"no template set 'cifar10'\. .*imagenet: openai_80, simple_7\. .*"
                                          r"prompts\.templates_from=cifar10 instead\.$"):
        resolve_prompts(cfg_for(tmp_path, "x.pt", images, "prompts.template_set=cifar10"), dataset)
    with pytest.raises(PromptError, match=r"names no prompt set\. Prompt sets with templates: .*cifar10.*\.$"):
        resolve_prompts(cfg_for(tmp_path, "x.pt", images, "prompts.templates_from=cifar11"), dataset)


# ---------------------------------------------------------------------- the error gallery

def test_select_errors_against_brute_force():
    from zeroshot.gallery import select_errors

    rng = np.random.default_rng(0)
    labels, top1, conf = rng.integers(0, 5, 300), rng.integers(0, 5, 300), rng.random(300)
    top, by_class = select_errors(labels, top1, conf, per_class=3, confusions=4, per_confusion=2)
    wrong = [i for i in range(300) if labels[i] != top1[i]]
    counts = {}
    for i in wrong:
        counts[(labels[i], top1[i])] = counts.get((labels[i], top1[i]), 0) + 1
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    assert [(t, p, n) for t, p, n, _ in top] == [(t, p, n) for (t, p), n in expected]
    for t, p, n, rows in top:
        mine = sorted((i for i in wrong if (labels[i], top1[i]) == (t, p)), key=lambda i: -conf[i])[:2]
        assert rows.tolist() == mine
    for t, (n, rows) in by_class.items():
        mine = sorted((i for i in wrong if labels[i] == t), key=lambda i: -conf[i])
        assert n == len(mine) and rows.tolist() == mine[:3]


def two_runs(tmp_path, tiny_checkpoint, capsys):
    """Two evaluations of one folder (two template lists): the second reads the first's cached image features."""
    from zeroshot.commands.evaluate import evaluate

    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog", "bird", "a_rather_long_class_name_that_must_wrap"],
                               per_class=5)
    first = evaluate(cfg_for(tmp_path, tiny_checkpoint, images, "gallery.per_class=2", "gallery.size=96"))
    line_1 = capsys.readouterr().out
    second = evaluate(cfg_for(tmp_path, tiny_checkpoint, images, "gallery.per_class=2", "gallery.size=96",
                              'prompts.templates=["a photo of a {}.","itap of a {}."]'))
    line_2 = capsys.readouterr().out
    assert "20 images, 0 from cache, in" in line_1 and "20 images, 20 from cache, in" in line_2
    assert "(1 template)" in line_1 and "(2 templates)" in line_2
    return images, first, second


def gallery_files(run_dir: Path) -> list[str]:
    return re.findall(r"src='(gallery/[^']+)'", (run_dir / "gallery.html").read_text())


def test_run_gallery_thumbnails_are_bounded_and_degrade_to_text(tmp_path, tiny_checkpoint, capsys):
    images, first, _ = two_runs(tmp_path, tiny_checkpoint, capsys)
    run = Path(first["run_dir"])
    preds = pd.read_csv(run / "predictions.csv")
    wrong = preds[preds.label != preds.prediction]
    files = set(gallery_files(run))
    assert files and all((run / f).is_file() for f in files)
    shown_per_class = {}
    for f in files:
        index = int(Path(f).stem)
        assert index in set(wrong["index"])  # only mistakes
        shown_per_class.setdefault(int(preds.set_index("index").label[index]), set()).add(index)
        with Image.open(run / f) as im:
            assert im.format == "JPEG" and max(im.size) <= 96
    page = (run / "gallery.html").read_text()
    assert f"{len(wrong)} of 20 images wrong" in page and "Most frequent confusions" in page
    per_class_in_page = re.findall(r"<summary>[^<]*: (\d+) wrong</summary>", page)
    assert sum(map(int, per_class_in_page)) == len(wrong)
    # images that cannot be read when the gallery is written: the same page, as text
    import types

    from zeroshot.gallery import RunView, write_run_gallery

    z = np.load(run / "logits.npz")
    names = pd.read_csv(run / "per_class.csv")["class"].tolist()
    gone = tmp_path / "gone" / "run"
    gone.mkdir(parents=True)
    view = RunView(names, z["labels"], z["logits"], z["indices"], preds.path.tolist())
    settings = types.SimpleNamespace(per_class=2, max_images=2000, confusions=10, per_confusion=6, size=96)
    write_run_gallery(gone, view, lambda row: None, settings, "gone")
    text = (gone / "gallery.html").read_text()
    assert text.count("image not available") == page.count("<img") and "<img" not in text
    assert not list((gone / "gallery").iterdir())


def test_gallery_thumbnails_decode_at_a_reduced_scale_and_threads_write_the_same_page(tmp_path):
    """A JPEG file becomes Pillow's thumbnail of it, decoded at a reduced DCT scale (display only), other formats in full;
    the thumbnails made in two threads are the same files and page as in one."""
    import types

    from zeroshot.gallery import RunView, open_recorded, write_run_gallery, write_thumbnail

    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (15, 20, 3)), np.ones((50, 50, 1))).astype(np.uint8)  # 1000x750, blocks
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    assert open_recorded(str(tmp_path / "big.jpg")).size == (1000, 750)
    assert open_recorded(str(tmp_path / "big.jpg"), thumbnail=112).size == (112, 84)
    assert open_recorded(str(tmp_path / "big.png"), thumbnail=112).size == (1000, 750)
    lazy = Image.open(tmp_path / "big.jpg")
    lazy.thumbnail((112, 112), reducing_gap=1.0)  # Pillow's own thumbnail of a JPEG not yet decoded: it drafts too
    ours = open_recorded(str(tmp_path / "big.jpg"), thumbnail=112)
    assert np.array_equal(np.asarray(lazy), np.asarray(ours))
    exact = open_recorded(str(tmp_path / "big.jpg")).convert("RGB")
    exact.thumbnail((112, 112))
    diff = np.abs(np.asarray(exact, dtype=np.float64) - np.asarray(ours, dtype=np.float64))
    assert 0 < diff.mean() < 8  # a thumbnail's worth of difference (sharp colour blocks), not another image
    assert write_thumbnail(ours, tmp_path / "thumb.jpg", 112) and Image.open(tmp_path / "thumb.jpg").size == (112, 84)

    paths = [str(tmp_path / ("big.jpg" if i % 2 else "big.png")) for i in range(12)]
    view = RunView([f"c{i}" for i in range(4)], np.arange(12) % 4, rng.normal(size=(12, 4)), np.arange(12), paths)
    settings = types.SimpleNamespace(per_class=2, max_images=2000, confusions=10, per_confusion=6, size=112)
    pages = []
    for threads in (1, 2):
        run = tmp_path / f"threads{threads}"
        run.mkdir()
        write_run_gallery(run, view, lambda r: open_recorded(paths[r], thumbnail=112), settings, "t", threads=threads)
        pages.append(((run / "gallery.html").read_text(), sorted(f.name for f in (run / "gallery").iterdir())))
    assert pages[0] == pages[1] and pages[0][1] and "image not available" not in pages[0][0]


def test_the_loader_makes_the_gallery_thumbnails_from_its_own_decode_and_the_scores_stay_the_same(
        tmp_path, tiny_checkpoint, capsys):
    """A run of at most gallery.max_images images: the loader (its worker processes too) makes each image's
    thumbnail from the decode the model's input comes from, and the gallery writes those bytes as they are. A larger
    run (max_images lowered) leaves them to the gallery, which opens the files. The scores are the same either way."""
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.gallery import thumbnail_jpeg

    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog", "bird"], per_class=4, size=200)
    common = ("cache=false", "gallery.size=64")
    made = evaluate(cfg_for(tmp_path / "a", tiny_checkpoint, images, *common, "num_workers=2"))
    opened = evaluate(cfg_for(tmp_path / "b", tiny_checkpoint, images, *common, "gallery.max_images=5"))
    assert made["loader_thumbnails"] == 12 and opened["loader_thumbnails"] == 0
    run_a, run_b = Path(made["run_dir"]), Path(opened["run_dir"])
    assert np.array_equal(np.load(run_a / "logits.npz")["logits"], np.load(run_b / "logits.npz")["logits"])
    paths = pd.read_csv(run_a / "predictions.csv").set_index("index").path
    shown = gallery_files(run_a)
    assert shown and len(shown) > len(gallery_files(run_b)) > 0
    for f in shown:  # the loader's thumbnail of the file it decoded, byte for byte
        with Image.open(paths[int(Path(f).stem)]) as im:
            assert (run_a / f).read_bytes() == thumbnail_jpeg(im.convert("RGB"), 64)
    for f in gallery_files(run_b):
        with Image.open(run_b / f) as im:
            assert im.format == "JPEG" and max(im.size) == 64


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_a_thumbnail_keeps_the_aspect_and_leaves_the_image_as_it_was(mode):
    import io

    from zeroshot.gallery import thumbnail_jpeg

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    image = big.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 60000, (300, 500), dtype=np.uint16))
    before = np.asarray(image).copy()
    with Image.open(io.BytesIO(thumbnail_jpeg(image, 112))) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB" and thumb.size == (112, 67)
    assert image.size == (500, 300) and np.array_equal(np.asarray(image), before)
    small = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    with Image.open(io.BytesIO(thumbnail_jpeg(small, 112))) as thumb:
        assert thumb.size == (30, 40)  # never enlarged


# ---------------------------------------------------------------------- the report in a real browser

def _page_facts(page, url: str, width: int) -> dict:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(url)
    page.wait_for_load_state("load")
    page.evaluate("() => Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    return page.evaluate("""() => ({
        scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
        firstTable: document.querySelector('table') && document.querySelector('table').id,
        mainFits: !document.querySelector('#main') ||
            document.querySelector('#main').parentElement.scrollWidth <= document.querySelector('#main').parentElement.clientWidth,
        images: [...document.images].map(i => [i.getAttribute('src').slice(0, 60), i.naturalWidth]),
    })""")


@pytest.mark.browser
def test_report_and_galleries_in_headless_chromium(tmp_path, tiny_checkpoint, capsys):
    from playwright.sync_api import sync_playwright  # a declared test dependency: missing, this fails

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from zeroshot.commands.compare import compare
    from zeroshot.report.build import build_report

    _, first, _ = two_runs(tmp_path, tiny_checkpoint, capsys)
    rcfg = make_cfg("report", f"inputs=[{tmp_path / 'results'}]", f"output_dir={tmp_path / 'reports'}",
                    "compare.n_boot=50")
    ccfg = make_cfg("compare", f"inputs=[{tmp_path / 'results'}]", f"output_dir={tmp_path / 'compare'}",
                    "compare.n_boot=50")
    report = Path(build_report(rcfg)["report_dir"])
    compared = Path(compare(ccfg)["compare_dir"])
    html = (report / "report.html").read_text()
    assert html.index("<table") < html.index("<details")  # the answer first, everything else folded below it
    pages = [report / "report.html", Path(first["run_dir"]) / "gallery.html", compared / "compare_gallery.html",
             report / "compare_gallery.html"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-dev-shm-usage", "--no-first-run"])
        try:
            tab = browser.new_page()
            for path in pages:
                for width in (1400, 900):
                    facts = _page_facts(tab, path.as_uri(), width)
                    assert facts["scroll"] <= facts["inner"] == width, (path.name, width, facts["scroll"])
                    assert all(w > 0 for _, w in facts["images"]), (path.name, facts["images"])
                    if path.name == "report.html":
                        assert facts["firstTable"] == "main" and facts["mainFits"]  # not even scrolling in its box
                    else:
                        assert len(facts["images"]) > 0
                    tab.screenshot(path=str(tmp_path / f"{path.stem}-{width}.png"))
            # the report's gallery links resolve from the file system
            tab.goto((report / "report.html").as_uri())
            hrefs = tab.eval_on_selector_all("#main a", "links => links.map(a => a.href)")
            assert len(hrefs) == 2 and all(Path(h.removeprefix("file://")).is_file() for h in hrefs)
        finally:
            browser.close()


# ---------------------------------------------------------------------- messages

def test_a_failed_download_leaves_no_empty_folder_and_says_what_works_offline(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    from zeroshot.data.readers import build_dataset
    from zeroshot.errors import DatasetError

    class Offline:
        url = "https://example.invalid/cifar-10-python.tar.gz"

        def __init__(self, root, download=False, **kwargs):
            Path(root, "cifar-10-batches-py").mkdir(parents=True)  # as torchvision does before it downloads
            raise RuntimeError(str(urllib.error.URLError("Name or service not known")))

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    cfg = make_cfg("eval", "dataset=cifar10", f"data_dir={tmp_path / 'data'}", "dataset.download=true")
    with pytest.raises(DatasetError) as e:
        build_dataset(cfg.dataset)
    assert not (tmp_path / "data").exists()
    message = str(e.value)
    assert message.startswith("Dataset 'cifar10' (test split) was not found under") and "\n" not in message
    sentences = re.split(r"(?<=\.) (?=[A-Z])", message)
    assert all(s.endswith(".") for s in sentences)
    assert "dataset=imagefolder dataset.root=/path/to/images" in message  # what works offline
    assert "online, dataset.root=hf-hub:" in message  # the Hub is not offered as an offline fix
    assert sentences[-1].startswith("Fetch the files on a machine with internet")
