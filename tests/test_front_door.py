"""The front door: `zeroshot.load` for every source and backend, the README's Python recipe, ImageNet's prompt sets
on its shifts, and every kind of bad input answered in one line (exit 1, no traceback), while bugs keep theirs."""
import json
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import zeroshot
import zeroshot.models.loader
from conftest import REPO, cli, make_cfg, openclip_model, save_openclip_folder
from datagen import write_imagefolder


def _image(size=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8))


def _tiny_openclip_folder(open_clip, tmp_path):
    from test_zoo import _tiny_openclip_cfg

    cfg = _tiny_openclip_cfg()
    return save_openclip_folder(openclip_model(open_clip, cfg), cfg, tmp_path / "oc-folder")


def _sources(kind, tmp_path, tiny_checkpoint, open_clip):
    """(what to pass to zeroshot.load, load kwargs, expected backend, expected source) for one source kind."""
    if kind == "openai_archive":
        return tiny_checkpoint, {}, "zeroshot", "file"
    if kind == "openclip_folder":
        return _tiny_openclip_folder(open_clip, tmp_path), {}, "zeroshot", "openclip_folder"
    if kind == "openclip_backend":
        return _tiny_openclip_folder(open_clip, tmp_path), {"backend": "open_clip"}, "open_clip", "openclip_folder"
    if kind == "transformers_clip":
        from test_zoo import _hf_clip

        return _hf_clip(tmp_path)[1], {}, "zeroshot", "transformers_folder"
    if kind == "transformers_siglip":
        from test_zoo import _hf_siglip

        return _hf_siglip(tmp_path)[1], {}, "transformers", "transformers_folder"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["openai_archive", "openclip_folder", "openclip_backend", "transformers_clip",
                                  "transformers_siglip"])
def test_load_every_source_and_backend(kind, tmp_path, tiny_checkpoint, open_clip):
    where, kwargs, backend, source = _sources(kind, tmp_path, tiny_checkpoint, open_clip)
    model, preprocess = zeroshot.load(where, device="cpu", **kwargs)
    assert model.identity.backend == backend and model.identity.source == source
    assert preprocess is model.transform  # exactly the transform eval applies to its images
    pixels = preprocess(_image())
    assert pixels.ndim == 3 and pixels.shape[0] == 3
    tokens = zeroshot.get_tokenizer(model)(["a photo of a cat.", "dog"])
    weights = zeroshot.build_classifier(model, ["cat", "dog", "bird"], ["a photo of a {}.", "a {}."])
    with torch.no_grad():
        feats = model.encode_image(pixels[None])
        text = model.encode_text(tokens)
        probs = zeroshot.probabilities(model, feats, weights)
        scores = zeroshot.logits(model, feats, weights)
    assert text.shape[0] == 2 and probs.shape == (1, 3) and torch.isfinite(probs).all()
    cos = torch.nn.functional.normalize(feats.float(), dim=-1) @ weights
    expected = model.logit_scale.exp().float() * cos
    if model.logit_bias is not None:  # SigLIP: its bias, then an independent sigmoid per class
        expected = expected + model.logit_bias.float()
        assert torch.allclose(probs, expected.sigmoid(), atol=1e-6)
    else:
        assert torch.allclose(probs, expected.softmax(-1), atol=1e-6) and torch.allclose(probs.sum(), torch.tensor(1.0))
    assert torch.allclose(scores, expected, atol=1e-5)


def test_load_picks_cuda_when_it_is_there(monkeypatch):
    seen = {}

    def fake_load_model(name, device, *args, **kwargs):
        seen["device"] = str(device)
        return types.SimpleNamespace(transform="T")

    monkeypatch.setattr(zeroshot.models.loader, "load_model", fake_load_model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model, preprocess = zeroshot.load("ViT-B/32")
    assert seen["device"] == "cuda" and preprocess == "T"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    zeroshot.load("ViT-B/32")
    assert seen["device"] == "cpu"


def test_readme_python_recipe_runs_on_siglip(tmp_path, monkeypatch):
    """The README's recipe, as written, on a SigLIP model (sigmoid with its bias) and a CLIP one (softmax)."""
    from test_zoo import _hf_siglip

    block = re.search(r"## Python API\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    _image().save(tmp_path / "pet.jpg")
    monkeypatch.chdir(tmp_path)
    _, folder = _hf_siglip(tmp_path)
    code = block.replace('zeroshot.load("ViT-B/32")', f"zeroshot.load({str(folder)!r})")
    assert code != block
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    model, image, weights, probs = scope["model"], scope["image"], scope["weights"], scope["probs"]
    with torch.no_grad():
        cos = torch.nn.functional.normalize(model.encode_image(image), dim=-1) @ weights
    assert torch.allclose(probs, (model.logit_scale.exp() * cos + model.logit_bias).sigmoid(), atol=1e-6)
    assert not torch.allclose(probs.sum(), torch.tensor(1.0))  # a sigmoid: not a distribution over the classes


def test_readme_fits_a_screen_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:50])
    assert ("zeroshot eval dataset=imagefolder dataset.root=/path/to/images model.checkpoint=/path/to/ViT-B-32.pt"
            in first_screen)
    assert 'pip install -e ".[test]" && python -m pytest -q' in readme  # .ci/run runs exactly this
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, page  # a path only this repository's developers have
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
            linked = (page.parent / target).resolve()
            assert linked.is_file(), (page.name, target)
    for topic in ("evaluation", "models", "datasets", "prompts", "retrieval", "reports", "caches", "speed", "architecture"):
        assert f"docs/{topic}.md" in readme, topic


def test_preprocess_size_as_open_clip_writes_it(open_clip, tmp_path):
    folder = _tiny_openclip_folder(open_clip, tmp_path)
    config = folder / "open_clip_config.json"
    doc = json.loads(config.read_text())
    doc["preprocess_cfg"]["size"] = [32, 32]  # open_clip's PreprocessCfg allows a pair
    config.write_text(json.dumps(doc))
    model, preprocess = zeroshot.load(folder, device="cpu")
    assert model.preprocess_spec.size == 32 and preprocess(_image()).shape == (3, 32, 32)
    doc["preprocess_cfg"]["size"] = [32, 48]
    config.write_text(json.dumps(doc))
    with pytest.raises(zeroshot.errors.UserError, match=r"open_clip_config.json.*\[32, 48\] is not square"):
        zeroshot.load(folder, device="cpu")


# ---------------------------------------------------------------------- ImageNet's prompts on its shifts

def _resolve(tmp_path, *overrides, classes=None, kind=None):
    from zeroshot.pipeline import resolve_classnames, resolve_prompts

    cfg = make_cfg("eval", *overrides)
    dataset = types.SimpleNamespace(classes=classes, shipped_templates=None)
    pset = resolve_prompts(cfg, dataset)
    return pset, resolve_classnames(cfg, pset, dataset)


def test_imagenet_prompt_sets_apply_to_the_shifts(tmp_path):
    from zeroshot.data.imagenet import subset_positions, wnid_lists
    from zeroshot.prompts.sets import prompts_hash

    imagenet = json.loads((REPO / "prompts" / "imagenet.json").read_text())
    for shift in ("imagenet_a", "imagenet_r", "imagenet_o"):
        expected = [imagenet["classnames"][wnid_lists()["imagenet"].index(w)] for w in sorted(wnid_lists()[shift])]
        assert [imagenet["classnames"][i] for i in subset_positions(shift)] == expected
        a_set, a_names = _resolve(tmp_path, f"dataset={shift}", "prompts=imagenet_7")
        b_set, b_names = _resolve(tmp_path, f"dataset={shift}", "prompts.template_set=simple_7")
        assert a_names == b_names == expected and a_set.templates == b_set.templates == imagenet["template_sets"]["simple_7"]
        assert prompts_hash(a_names, a_set.templates) == prompts_hash(b_names, b_set.templates)  # the same classifier
        _, full = _resolve(tmp_path, f"dataset={shift}")  # the default: ImageNet's own names and 80 templates
        assert full == expected
    # a user's own 1000-name file applies too
    names = tmp_path / "my_imagenet_names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(1000)))
    _, mine = _resolve(tmp_path, "dataset=imagenet_r", f"dataset.classnames={names}")
    assert mine == [f"thing {i}" for i in subset_positions("imagenet_r")]
    # ObjectNet keeps its own class names and takes ImageNet's templates
    own = [f"object {i}" for i in range(113)]
    oset, onames = _resolve(tmp_path, "dataset=objectnet", "prompts=imagenet_7", classes=own)
    assert onames == own and oset.templates == imagenet["template_sets"]["simple_7"]
    for shift in ("imagenetv2", "imagenet_sketch", "objectnet"):  # ImageNet's template sets apply to every shift
        s_set, _ = _resolve(tmp_path, f"dataset={shift}", "prompts=imagenet_7", classes=own if shift == "objectnet" else None)
        assert s_set.templates == imagenet["template_sets"]["simple_7"]


def test_a_change_to_imagenets_names_reaches_the_shifts(tmp_path, monkeypatch):
    from zeroshot.data.imagenet import subset_positions

    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    doc = json.loads((prompts / "imagenet.json").read_text())
    first = subset_positions("imagenet_r")[0]
    doc["classnames"][first] = "a renamed goldfish"
    (prompts / "imagenet.json").write_text(json.dumps(doc))
    monkeypatch.setattr(zeroshot.prompts.sets, "PROMPTS_DIR", prompts)
    _, names = _resolve(tmp_path, "dataset=imagenet_r", "prompts=imagenet_7")
    assert names[0] == "a renamed goldfish"


def test_imagenet_7_on_imagenet_r_end_to_end(tmp_path, tiny_checkpoint):
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.data.imagenet import wnid_lists

    root = tmp_path / "r" / "imagenet-r"
    for i, w in enumerate(wnid_lists()["imagenet_r"]):
        (root / w).mkdir(parents=True)
        _image(16, i).save(root / w / "0.jpg")
    cfg = make_cfg("eval", "dataset=imagenet_r", f"dataset.root={tmp_path / 'r'}", "prompts=imagenet_7",
                   f"model.checkpoint={tiny_checkpoint}", f"results_dir={tmp_path / 'results'}",
                   f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false")
    m = evaluate(cfg)
    assert m["n_classes"] == 200 and m["n_templates"] == 7 and m["n_images"] == 200


# ---------------------------------------------------------------------- bad input: one line, exit 1

def assert_one_line(result, *needles):
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "Caught" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def common(tmp_path, checkpoint):
    return [f"model.checkpoint={checkpoint}", f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}",
            "progress=false"]


@pytest.mark.cli
def test_decode_failure_inside_a_dataloader_worker(tmp_path, tiny_checkpoint):
    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=2)
    broken = images / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", "num_workers=1", *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, str(broken), "image #", "skip_bad_images=true")
    ok = cli("eval", "dataset=imagefolder", f"dataset.root={images}", "num_workers=1", "skip_bad_images=true",
             *common(tmp_path, tiny_checkpoint))
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.cli
def test_text_files_in_another_encoding(tmp_path, tiny_checkpoint):
    images = write_imagefolder(tmp_path / "imgs", ["0", "1"], per_class=1)
    names = tmp_path / "names.txt"
    names.write_bytes("café\nthé\n".encode("latin-1"))
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", f"dataset.classnames={names}",
            *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, str(names), "UTF-8", "line 1")
    templates = tmp_path / "templates.txt"
    templates.write_bytes("une photo d'un {} \xe9\n".encode("latin-1", errors="replace") + b"\xe9 {}\n")
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", f"prompts.file={templates}",
            *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, str(templates), "UTF-8")
    names.write_text("café\nthé\n", encoding="utf-16")  # a BOM says what it is: read correctly
    from zeroshot.prompts.sets import read_classnames

    assert read_classnames(names) == ["café", "thé"]
    csv = tmp_path / "labels.csv"
    csv.write_bytes(f"path,label\n{images / '0' / '000.png'},caf\xe9\n".encode("latin-1"))
    r = cli("eval", "dataset=csv", f"dataset.path={csv}", *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, str(csv), "UTF-8")


@pytest.mark.cli
def test_non_finite_weights_and_features_are_named(tmp_path, tiny_vit):
    import copy

    from conftest import save_openai_archive
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.errors import CheckpointError

    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=2)
    bad = copy.deepcopy(tiny_vit)
    with torch.no_grad():
        bad.visual.proj[0, 0] = float("nan")
    ckpt = save_openai_archive(bad, tmp_path / "nan.pt")
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", *common(tmp_path, ckpt))
    assert_one_line(r, "visual.proj", "non-finite")
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("metrics.json"))
    # finite weights whose features overflow: the image is named
    huge = copy.deepcopy(tiny_vit)
    with torch.no_grad():
        huge.visual.ln_post.weight.fill_(3e38)
        huge.visual.proj.fill_(3e38)
    torch.save(huge.state_dict(), tmp_path / "huge.pt")
    cfg = make_cfg("eval", "dataset=imagefolder", f"dataset.root={images}", "num_workers=0",
                   *common(tmp_path, tmp_path / "huge.pt"), "model.activation=quick_gelu")
    with pytest.raises(CheckpointError, match=r"non-finite .* for image .*imgs/cat/000\.png"):
        evaluate(cfg)


@pytest.mark.cli
def test_out_of_range_csv_label_names_the_row(tmp_path, tiny_checkpoint):
    images = write_imagefolder(tmp_path / "imgs", ["a", "b"], per_class=2)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    csv = tmp_path / "labels.csv"
    rows = [f"{images / 'a' / '000.png'},0", f"{images / 'b' / '000.png'},5", f"{images / 'b' / '001.png'},1"]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    r = cli("eval", "dataset=csv", f"dataset.path={csv}", f"dataset.classnames={names}", *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, f"row 3 of {csv}", "label 5", "2 classes")


@pytest.mark.parametrize("setting,needle", [("batch_size=0", "batch_size=0 is out of range"),
                                            ("text_batch_size=-3", "text_batch_size=-3"),
                                            ("num_workers=-1", "num_workers=-1"), ("chunk_size=0", "chunk_size=0"),
                                            ("threads=0", "threads=0"), ("dist_shards=diagonal", "balanced, chunks")])
@pytest.mark.cli
def test_numeric_settings_are_checked_before_any_work(tmp_path, setting, needle):
    r = cli("eval", "dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}", setting)
    assert_one_line(r, needle)  # the missing data folder would be the error if the setting were not checked first


@pytest.mark.cli
def test_prompt_and_report_settings_are_checked(tmp_path):
    assert_one_line(cli("prompts", "dataset=imagefolder", f"dataset.root={tmp_path}", "select_fraction=1.0"),
                    "select_fraction=1.0", "< 1")
    assert_one_line(cli("prompts", "dataset=imagefolder", f"dataset.root={tmp_path}", "bootstrap=0"), "bootstrap=0")
    assert_one_line(cli("report", str(tmp_path), "tolerance=-1"), "tolerance=-1")


@pytest.mark.cli
def test_misspelt_group_and_key_say_did_you_mean():
    line = assert_one_line(cli("eval", "datset=cifar10"), "unknown setting 'datset'", "did you mean 'dataset'")
    assert "batch_size" in line  # the valid choices are listed
    assert_one_line(cli("eval", "dataset.rooot=/x"), "did you mean 'dataset.root'")
    assert_one_line(cli("eval", "model=vit_b3"), "unknown model 'vit_b3'", "vit_b32")
    assert_one_line(cli("report", "suit=openclip_35"), "did you mean 'suite'")


@pytest.mark.cli
def test_values_with_spaces_and_non_ascii_letters(tmp_path, tiny_checkpoint):
    root = tmp_path / "my photos" / "café (2024)"
    images = write_imagefolder(root, ["cat", "dog"], per_class=1)
    # unquoted in a shell, the space splits the value into two arguments: both forms work
    for args in ([f"dataset.root={str(images).split(' ', 1)[0]}", str(images).split(" ", 1)[1]], [f"dataset.root={images}"]):
        r = cli("eval", "dataset=imagefolder", *args, *common(tmp_path, tiny_checkpoint))
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and "LexerNoViableAlt" not in r.stderr
    # a value whose quoting cannot be guessed (a sweep under -m) gets a message that shows the quoting
    from zeroshot.cli import read_overrides
    from zeroshot.errors import UserError

    assert read_overrides("eval", ["dataset.root=/data/café"]) == ["dataset.root='/data/café'"]
    with pytest.raises(UserError, match=r"cannot be read .*quote the value"):
        read_overrides("eval", ["x='a(b"])  # an unterminated quote: which quoting was meant cannot be guessed


@pytest.mark.cli
def test_stray_placeholder_in_a_template(tmp_path, tiny_checkpoint):
    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=1)
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", 'prompts.templates=["a photo of a {} in {place}."]',
            *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, "{place}", "nothing fills")
    r = cli("eval", "dataset=imagefolder", f"dataset.root={images}", 'prompts.templates=["a photo of a {c}."]',
            *common(tmp_path, tiny_checkpoint))
    assert_one_line(r, "{c}")


# ---------------------------------------------------------------------- the error policy

@pytest.mark.cli
def test_a_bug_keeps_its_traceback(tmp_path, tiny_checkpoint):
    """A ValueError from our code (or torch) is a bug, not the user's mistake: it must not become one tidy line."""
    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=1)
    code = ("import zeroshot.metrics.classification as m\n"
            "def broken(*a, **k):\n    raise ValueError('injected bug')\n"
            "m.classification_metrics = broken\n"
            "import zeroshot.commands.evaluate as e\ne.classification_metrics = broken\n"
            "from zeroshot.__main__ import main\nimport sys\nsys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "eval", "dataset=imagefolder", f"dataset.root={images}",
                        *common(tmp_path, tiny_checkpoint)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "injected bug" in r.stderr
    assert "Traceback" in r.stderr and "zeroshot eval: error:" not in r.stderr


def test_skip_bad_images_never_skips_a_transform_bug(tmp_path, tiny_checkpoint, monkeypatch):
    from zeroshot.commands.evaluate import evaluate

    images = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=1)

    def broken_transform(spec):
        def apply(image):
            raise ZeroDivisionError("a bug in preprocessing")
        return apply

    monkeypatch.setattr(zeroshot.models.loader, "image_transform", broken_transform)
    cfg = make_cfg("eval", "dataset=imagefolder", f"dataset.root={images}", "num_workers=0",
                   "skip_bad_images=true", *common(tmp_path, tiny_checkpoint))
    with pytest.raises(ZeroDivisionError):
        evaluate(cfg)
