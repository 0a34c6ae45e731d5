"""Multilingual zero-shot: ImageNet's names and templates per language against CLIP_benchmark's, element by
element (its ar/cn/it/jp files and its babel_imagenet subset with remapped labels), a French run scoring exactly
the images of Babel-ImageNet's 799 French classes (its file served from ../shared on 127.0.0.1, pinned), and
the errors a bad language gets."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from zeroshot.errors import PromptError
from zeroshot.prompts import languages as L
from conftest import REPO, eval_config, make_cfg, shared_path
from localserver import server  # noqa: F401  (the fixture)

CB_LANGS = {"ar": "ar", "zh": "cn", "it": "it", "ja": "jp"}  # ours -> CLIP_benchmark's file code


def multilingual(name: str) -> Path:
    return shared_path("reference", "multilingual", name)


def cfg(tmp_path, checkpoint, *overrides):
    return eval_config(tmp_path, checkpoint, "batch_size=128", *overrides)


def prompts_cfg(**keys):
    return make_cfg("eval", "dataset=imagenet", *(f"prompts.{k}={v}" for k, v in keys.items())).prompts


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """torchvision's ImageNet layout (meta.bin + val/<wnid>/), one 8x8 image per class."""
    from zeroshot.data.imagenet import wnid_lists

    root = tmp_path_factory.mktemp("imagenet")
    wnids = wnid_lists()["imagenet"]
    torch.save(({w: (f"class {i}",) for i, w in enumerate(wnids)}, []), root / "meta.bin")
    for i, w in enumerate(wnids):
        (root / "val" / w).mkdir(parents=True)
        Image.new("RGB", (8, 8), (i % 256, (7 * i) % 256, 90)).save(root / "val" / w / f"ILSVRC2012_val_{i:08d}.JPEG",
                                                                     format="PNG")
    return root


# ---------------------------------------------------------------- names and templates, element by element

@pytest.mark.parametrize("ours,theirs", sorted(CB_LANGS.items()))
def test_clip_benchmark_translations_as_clip_benchmark_builds_them(ours, theirs):
    import clip_benchmark.datasets as cbd

    got = L.clip_benchmark_prompts(ours)
    cb_folder = Path(cbd.__file__).parent
    for folder in (cb_folder, multilingual("").parent / "multilingual"):
        if not (folder / f"{theirs}_classnames.json").is_file():
            continue  # ../shared absent: the installed package's copy still checks
        names = json.loads((folder / f"{theirs}_classnames.json").read_text())["imagenet1k"]
        templates = json.loads((folder / f"{theirs}_zeroshot_classification_templates.json").read_text())["imagenet1k"]
        assert len(got.names) == len(names) == 1000 and got.positions == list(range(1000))
        for i, (a, b) in enumerate(zip(got.names, names)):
            assert a == b, (i, a, b)
        assert len(got.templates) == len(templates)
        for a, b in zip(got.templates, templates):
            assert a == b.replace("{c}", "{}")  # verbatim, duplicates kept (cn and it repeat some)


def test_babel_names_and_templates_as_clip_benchmark_builds_them():
    names_file, templates_file = multilingual("babel_imagenet.json"), multilingual("nllb_dist13b_prompts.json")
    if not names_file.is_file():
        pytest.skip("../shared/reference/multilingual is absent")
    babel, nllb = json.loads(names_file.read_text()), json.loads(templates_file.read_text())
    assert set(L.facts()["babel"]["name_languages"]) == {k.lower() for k in babel}
    assert set(L.facts()["babel"]["template_languages"]) == {k.lower() for k in nllb}
    for code, (idxs, names) in babel.items():
        if code not in nllb:
            with pytest.raises(PromptError, match="NLLB templates do not"):
                L.babel_prompts(code.lower(), str(names_file), str(templates_file), None)
            continue
        got = L.babel_prompts(code.lower(), str(names_file), str(templates_file), None)
        assert got.positions == idxs and got.names == names, code
        # CLIP_benchmark: templates = [t.replace('{}', '{c}') ...], filled with .replace('{c}', name)
        assert [t.replace("{}", "{c}") for t in got.templates] == [t.replace("{}", "{c}") for t in nllb[code]]
        assert got.templates == nllb[code]  # verbatim: spacing and repeats
    fr = L.babel_prompts("fr", str(names_file), str(templates_file), None)
    assert len(fr.positions) == 799


def test_babel_subset_and_labels_as_clip_benchmark(imagenet_root):
    """Our dataset cut to French's 799 classes: the same images, in the same order, with the same remapped labels
    as CLIP_benchmark's BabelImageNet on the same folder."""
    names_file = multilingual("babel_imagenet.json")
    if not names_file.is_file():
        pytest.skip("../shared/reference/multilingual is absent")
    from clip_benchmark.datasets.babel_imagenet import BabelImageNet

    from zeroshot.data.readers import build_dataset
    from zeroshot.data.subsets import keep_classes

    idxs = json.loads(names_file.read_text())["FR"][0]
    theirs = BabelImageNet(str(imagenet_root), idxs=idxs, split="val")
    dcfg = make_cfg("eval", "dataset=imagenet", f"dataset.root={imagenet_root}").dataset
    full = build_dataset(dcfg)
    ours = keep_classes(full, idxs, "test")
    assert ours.n_images_left_out == 201
    their_labels = [idxs.index(y) for _, y in theirs.samples]  # BabelImageNet.__getitem__'s remapping
    assert their_labels == theirs.targets
    assert [p for p, _ in ours.dataset.source.samples] == [p for p, _ in theirs.samples]
    assert ours.dataset.listed_labels() == their_labels
    assert ours.dataset.fingerprint()["digest"] != full.fingerprint()["digest"]


# ---------------------------------------------------------------- a French run on 799 classes

def test_french_run_scores_exactly_the_799_classes(tmp_path, imagenet_root, tiny_checkpoint, server, capfd):
    names_file = multilingual("babel_imagenet.json")
    if not names_file.is_file():
        pytest.skip("../shared/reference/multilingual is absent")
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.data.imagenet import wnid_lists

    base, routes = server
    routes["/mirror/babel_imagenet.json"] = (200, names_file.read_bytes(), None)
    fr_idx, fr_names = json.loads(names_file.read_text())["FR"]
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagenet", f"dataset.root={imagenet_root}",
                     "prompts.language=fr", f"prompts.babel_names={base}/mirror/babel_imagenet.json",
                     "prompts.templates=['une photo de {}.']"))
    assert m["n_images"] == 799 and m["n_classes"] == 799
    assert m["language"] == "fr" and m["language_detail"]["language_source"] == "babel"
    assert m["language_detail"]["n_images_left_out"] == 201 and m["language_detail"]["n_classes_left_out"] == 201
    assert m["language_detail"]["names_sha256"] == L.facts()["babel"]["names_sha256"]
    assert m["prompts"] == "imagenet_custom-fr-babel" and m["prompts_label"].startswith("imagenet_custom-fr-babel#")
    from zeroshot.prompts.sets import prompts_hash
    from zeroshot.record import language_hash

    assert m["prompts_hash"] == language_hash(prompts_hash(fr_names, ["une photo de {}."]), "fr", "babel")
    err = capfd.readouterr().err
    assert "model tiny-vit.pt: its text tower reads English only" in err  # named
    assert "201 images of the other 201 classes left out" in err
    # Babel's French folds some classes into one word (8 names): scored as published, never silently
    folded = {}
    for label, name in enumerate(fr_names):
        folded.setdefault(" ".join(name.casefold().split()), []).append(label)
    folded = {fr_names[ls[0]]: ls for ls in folded.values() if len(ls) > 1}
    assert len(folded) == 8 and m["language_detail"]["repeated_names"] == folded
    assert "8 class names each name two or more classes, as published" in err
    wnids = wnid_lists()["imagenet"]
    expected = {wnids[i]: name for i, name in zip(fr_idx, fr_names)}
    preds = pd.read_csv(Path(m["run_dir"]) / "predictions.csv")
    assert sorted(Path(p).parent.name for p in preds.path) == sorted(expected)
    for path, label, name in zip(preds.path, preds.label, preds.label_name):
        wnid = Path(path).parent.name
        assert name == expected[wnid] and label == fr_idx.index(wnids.index(wnid))


def test_english_default_unchanged():
    assert L.language_prompts(prompts_cfg()) is None
    assert L.language_prompts(prompts_cfg(language="en")) is None


# ---------------------------------------------------------------- bad input

def test_unknown_language_lists_the_available_ones():
    with pytest.raises(PromptError, match=r"Unknown prompts.language='xx' for ImageNet. Available: af, .*\bfr\b.*zh "
                                          r"\(clip_benchmark names ar, it, ja, zh; babel names every one\)"):
        L.language_prompts(prompts_cfg(language="xx"))


def test_source_without_the_language_says_which_sources_cover_which():
    with pytest.raises(PromptError, match=r"clip_benchmark has no ImageNet class names in that language.*"
                                          r"Source\(s\) with 'fr': babel.*clip_benchmark names ar, it, ja, zh; "
                                          r"babel names 93 languages \(af, "):
        L.language_prompts(prompts_cfg(language="fr", language_source="clip_benchmark"))
    with pytest.raises(PromptError, match="language_source='google' is not a choice"):
        L.language_prompts(prompts_cfg(language="fr", language_source="google"))


def test_offline_first_fetch_names_the_url_and_the_local_copy(tmp_path):
    p = prompts_cfg(language="de", babel_names="http://127.0.0.1:9/babel_imagenet.json")
    with pytest.raises(PromptError, match=r"Could not fetch Babel-ImageNet's babel_imagenet.json from "
                                          r"http://127.0.0.1:9/babel_imagenet.json .*prompts.babel_names=/path/to/babel_imagenet.json"):
        L.language_prompts(p, tmp_path / "cache")


def test_cn_and_jp_are_zh_and_ja():
    assert L.language_prompts(prompts_cfg(language="cn")).language == "zh"
    assert L.language_prompts(prompts_cfg(language="jp")).names == L.clip_benchmark_prompts("ja").names


# ---------------------------------------------------------------- multilingual retrieval

XM_CAPTIONS = {  # three scripts: Latin, Cyrillic, Han
    "de": ["ein Flugzeug am Himmel", "ein rotes Auto", "ein kleiner Vogel", "eine Katze schläft", "ein Hirsch im Wald",
           "ein Hund rennt", "ein grüner Frosch", "ein Pferd auf der Weide", "ein Schiff im Hafen", "ein großer Lastwagen"],
    "ru": ["самолёт в небе", "красная машина", "маленькая птица", "кошка спит", "олень в лесу", "собака бежит",
           "зелёная лягушка", "лошадь на лугу", "корабль в порту", "большой грузовик"],
    "zh": ["天空中的飞机", "一辆红色的汽车", "一只小鸟", "一只睡觉的猫", "森林里的鹿", "一只奔跑的狗", "一只绿色的青蛙",
           "草地上的马", "港口里的船", "一辆大卡车"],
}


@pytest.fixture(scope="module")
def xm3600_root(tmp_path_factory):
    """Google's Crossmodal-3600 layout (xm3600/captions.jsonl + xm3600/images/<key>.jpg), CIFAR-10 test JPEGs."""
    cifar = shared_path("data", "cifar10-test")
    root = tmp_path_factory.mktemp("xm3600")
    (root / "xm3600" / "images").mkdir(parents=True)
    lines = []
    for i, cls in enumerate(sorted(p.name for p in cifar.iterdir())):
        key = f"{i:016x}"
        (root / "xm3600" / "images" / f"{key}.jpg").write_bytes((cifar / cls / "0000.jpg").read_bytes())
        item = {"image/key": key, **{lang: {"caption": [caps[i], f"second {caps[i]}"]} for lang, caps in XM_CAPTIONS.items()}}
        lines.append(json.dumps(item, ensure_ascii=False))
    (root / "xm3600" / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("language", sorted(XM_CAPTIONS))
def test_crossmodal3600_equals_clip_benchmark_per_language(tmp_path, xm3600_root, tiny_checkpoint, language):
    """`zeroshot retrieval dataset=crossmodal3600 dataset.language=L` against CLIP_benchmark's annotation file,
    dataset, collate and zeroshot_retrieval.evaluate on the same weights."""
    from clip_benchmark.datasets import crossmodal3600 as cm
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    import zeroshot
    from zeroshot.commands.retrieval import run_retrieval

    c = eval_config(tmp_path, tiny_checkpoint, f"results_dir={tmp_path / 'r'}", "dataset=crossmodal3600",
                    f"dataset.root={xm3600_root}", f"dataset.language={language}", config="retrieval")
    ours = run_retrieval(c)
    assert ours["language"] == language and ours["n_images"] == 10 and ours["n_captions"] == 10
    assert ours["prompts_label"].startswith(f"captions-{language}#")

    cb_root = tmp_path / "cb"
    (cb_root).mkdir()
    (cb_root / "xm3600").symlink_to(xm3600_root / "xm3600")
    cm.create_annotation_file(str(cb_root), language)  # finds the images and captions: no download
    model, preprocess = zeroshot.load(str(tiny_checkpoint), device="cpu")
    ds = cm.Crossmodal3600(str(cb_root), str(cb_root / cm.OUTPUT_FILENAME_TEMPLATE.format(language)), transform=preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=get_dataset_collate_fn("crossmodal3600"))
    theirs = zeroshot_retrieval.evaluate(model, loader, zeroshot.get_tokenizer(model), "cpu", amp=False,
                                         recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        for side in ("image_retrieval", "text_retrieval"):
            assert ours[f"{side}_recall@{k}"] == pytest.approx(theirs[f"{side}_recall@{k}"], abs=1e-6)  # theirs: float32, (side, k)


def test_crossmodal3600_unknown_language_lists_the_available_ones(tmp_path, xm3600_root, tiny_checkpoint):
    from zeroshot.commands.retrieval import run_retrieval
    from zeroshot.errors import DatasetError

    c = make_cfg("retrieval", f"model.checkpoint={tiny_checkpoint}", "dataset=crossmodal3600",
                 f"dataset.root={xm3600_root}", "dataset.language=xx")
    with pytest.raises(DatasetError, match=r"Unknown dataset.language='xx' for crossmodal3600. Available: ar, bn, .*, zh"):
        run_retrieval(c)


# ---------------------------------------------------------------- multilingual open_clip models, built here

FLORES = ["eng_Latn", "fra_Latn", "deu_Latn", "rus_Cyrl", "zho_Hant", "ita_Latn"]
CORPUS = [c for caps in XM_CAPTIONS.values() for c in caps] + ["une photo de {}", "a photo of a {}", "tanche", "poisson rouge"]


def _local_tokenizer(kind: str):
    """A small BPE trained here on CORPUS (no download), wrapped as NLLB's or as a plain fast tokenizer (XLM-R)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", *(FLORES if kind == "nllb" else []), "<mask>"]
    tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    common = dict(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                  mask_token="<mask>")
    if kind == "nllb":
        from transformers import NllbTokenizerFast

        return NllbTokenizerFast(src_lang="eng_Latn", additional_special_tokens=FLORES, **common)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(**common)


def _multilingual_openclip_folder(open_clip, root: Path, kind: str) -> Path:
    """open_clip's Hub layout for a tiny NLLB-CLIP (M2M100 encoder, cls pooler) or XLM-R CLIP (mean pooler), random
    weights, its text tower's HF config and the local tokenizer in the folder (open_clip reads local-dir: so)."""
    from transformers import M2M100Config, XLMRobertaConfig

    from conftest import save_openclip_folder

    hf = root / f"{kind}-text-config"
    tokenizer = _local_tokenizer(kind)
    size = dict(vocab_size=len(tokenizer), max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if kind == "nllb":
        M2M100Config(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                     encoder_ffn_dim=64, decoder_ffn_dim=64, **size).save_pretrained(hf)
        text = {"hf_proj_type": "linear", "hf_pooler_type": "cls_pooler"}
    else:
        XLMRobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, **size).save_pretrained(hf)
        text = {"hf_pooler_type": "mean_pooler"}
    text = {"hf_model_name": str(hf), "hf_tokenizer_name": str(hf), "context_length": 24, **text}
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8}, "text_cfg": text}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=32, vision_cfg=cfg["vision_cfg"], text_cfg={**text, "hf_model_pretrained": False})
    folder = save_openclip_folder(model.eval(), cfg, root / ("nllb-clip-tiny" if kind == "nllb" else "xlm-roberta-tiny"))
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nllb_folder(open_clip, tmp_path_factory):
    return _multilingual_openclip_folder(open_clip, tmp_path_factory.mktemp("nllb"), "nllb")


@pytest.fixture(scope="module")
def xlmr_folder(open_clip, tmp_path_factory):
    return _multilingual_openclip_folder(open_clip, tmp_path_factory.mktemp("xlmr"), "xlmr")


def test_nllb_language_code_reaches_its_tokenizer(nllb_folder):
    import zeroshot
    from zeroshot.models.languages import apply_language_to_model

    model, _ = zeroshot.load(str(nllb_folder), device="cpu")
    tok = zeroshot.get_tokenizer(model)
    ids = tok.built().tokenizer.convert_tokens_to_ids
    assert int(tok(["une photo"])[0, 0]) == ids("eng_Latn")  # the tokenizer's default
    for language, code in (("fr", "fra_Latn"), ("de", "deu_Latn"), ("cn", "zho_Hant")):
        apply_language_to_model(model, language)
        assert model.text_language == code and int(tok(["une photo"])[0, 0]) == ids(code)  # and it stays set


@pytest.mark.parametrize("language", ["de", "ru"])
def test_nllb_clip_retrieval_in_two_languages_equals_clip_benchmark(tmp_path, nllb_folder, xm3600_root, language):
    from clip_benchmark.datasets import crossmodal3600 as cm
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    import zeroshot
    from zeroshot.commands.retrieval import run_retrieval
    from zeroshot.models.languages import apply_language_to_model

    c = eval_config(tmp_path, nllb_folder, f"results_dir={tmp_path / 'r'}", "dataset=crossmodal3600",
                    f"dataset.root={xm3600_root}", f"dataset.language={language}", config="retrieval")
    ours = run_retrieval(c)
    code = {"de": "deu_Latn", "ru": "rus_Cyrl"}[language]
    assert ours["language"] == language and ours["text_language"] == code and ours["backend"] == "open_clip"

    (tmp_path / "cb").mkdir()
    (tmp_path / "cb" / "xm3600").symlink_to(xm3600_root / "xm3600")
    cm.create_annotation_file(str(tmp_path / "cb"), language)
    model, preprocess = zeroshot.load(str(nllb_folder), device="cpu")
    apply_language_to_model(model, language)
    ds = cm.Crossmodal3600(str(tmp_path / "cb"), str(tmp_path / "cb" / cm.OUTPUT_FILENAME_TEMPLATE.format(language)),
                           transform=preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=get_dataset_collate_fn("crossmodal3600"))
    theirs = zeroshot_retrieval.evaluate(model, loader, zeroshot.get_tokenizer(model), "cpu", amp=False, recall_k_list=[1, 5])
    for key in ("image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@5"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_xlmr_clip_imagenet_in_two_languages(tmp_path, xlmr_folder, imagenet_root, capfd):
    """An XLM-R open_clip model, random weights, a tokenizer built here: ImageNet in Italian (CLIP_benchmark's
    1000 names) and in French (Babel-ImageNet's 799, a local copy), no English-only warning."""
    names_file = multilingual("babel_imagenet.json")
    from zeroshot.commands.evaluate import evaluate

    it = evaluate(cfg(tmp_path, xlmr_folder, "dataset=imagenet", f"dataset.root={imagenet_root}", "prompts.language=it",
                      "prompts.templates=['una foto di {}.']"))
    fr = evaluate(cfg(tmp_path, xlmr_folder, "dataset=imagenet", f"dataset.root={imagenet_root}", "prompts.language=fr",
                      f"prompts.babel_names={names_file}", "prompts.templates=['une photo de {}.']"))
    assert (it["n_images"], it["language"], it["language_detail"]["language_source"]) == (1000, "it", "clip_benchmark")
    assert (fr["n_images"], fr["language"], fr["language_detail"]["language_source"]) == (799, "fr", "babel")
    assert it["prompts_hash"] != fr["prompts_hash"] and it["images_from_cache"] == 0 and fr["images_from_cache"] == 0
    assert "English only" not in capfd.readouterr().err


# ---------------------------------------------------------------- suites and the report

def test_suite_entries_expand_to_every_language_and_reach_their_keys(tmp_path):
    from zeroshot import suite
    from zeroshot.prompts.languages import facts

    entries = suite.expand_datasets(["mnist", "crossmodal3600:*", "xtd10:jp", "imagenet:*"])
    assert entries[0] == "mnist" and "xtd10:jp" in entries
    assert [e for e in entries if e.startswith("crossmodal3600:")] == [f"crossmodal3600:{x}" for x in
                                                                       dataset_languages("crossmodal3600")]
    imagenet = {e.split(":")[1] for e in entries if e.startswith("imagenet:")}
    assert imagenet == set(facts()["clip_benchmark"]["files"]) | set(facts()["babel"]["template_languages"])
    names = suite.write_pair_group(tmp_path, [("default", "crossmodal3600:de"), ("default", "imagenet:fr")])
    # as suite.launch runs a retrieval pair: its dataset on the command line (retrieval.yaml overrides the group)
    r = make_cfg("retrieval", "dataset=crossmodal3600", f"+pair={names[0]}",
                 f"hydra.searchpath=[file://{tmp_path}]")
    e = make_cfg("eval", f"+pair={names[1]}", f"hydra.searchpath=[file://{tmp_path}]")
    assert (r.dataset.name, r.dataset.language) == ("crossmodal3600", "de")
    assert (e.dataset.name, e.prompts.language) == ("imagenet", "fr")


def dataset_languages(name: str) -> list[str]:
    import yaml

    return [str(x) for x in yaml.safe_load((REPO / "configs" / "dataset" / f"{name}.yaml").read_text())["languages"]]


def test_report_groups_runs_by_language(tmp_path, xm3600_root, imagenet_root, tiny_checkpoint):
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.commands.retrieval import run_retrieval
    from zeroshot.report.build import build_report

    results = tmp_path / "results"
    runs = {}
    for language in ("de", "zh"):
        c = make_cfg("retrieval", f"model.checkpoint={tiny_checkpoint}", f"results_dir={results}",
                     f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false",
                     "dataset=crossmodal3600", f"dataset.root={xm3600_root}",
                     f"dataset.language={language}")
        runs[language] = run_retrieval(c)
    it = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagenet", f"dataset.root={imagenet_root}", "prompts.language=it",
                      "prompts.templates=['una foto di {}.']"))
    rc = make_cfg("report", f"inputs=[{results}]", f"output_dir={tmp_path / 'reports'}")
    out = build_report(rc)
    table = pd.DataFrame(out["multilingual"]).set_index("language")
    assert list(table.index) == ["de", "it", "zh", "average"]
    for language in ("de", "zh"):
        assert table.loc[language, "crossmodal3600 mean_recall@1"] == pytest.approx(100 * runs[language]["mean_recall@1"])
    assert table.loc["it", "imagenet top1"] == pytest.approx(100 * it["top1"])
    assert table.loc["average", "crossmodal3600 mean_recall@1"] == pytest.approx(
        50 * (runs["de"]["mean_recall@1"] + runs["zh"]["mean_recall@1"]))
    assert table.loc["average", "n_languages"] == 3
    md = (Path(out["report_dir"]) / "report.md").read_text()
    assert "## Multilingual" in md and "| average (3 languages) |" in md


def test_published_multilingual_retrieval_beside_a_comparable_run():
    from zeroshot.report.multilingual import PUBLISHED_MULTILINGUAL, multilingual_table

    pub = pd.read_csv(PUBLISHED_MULTILINGUAL)
    release = "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"
    row = {"model": "xlmr", "model_release": release, "checkpoint_sha256": "a" * 64, "date": "1", "mean_recall@1": 0.5}
    frame = pd.DataFrame([{**row, "dataset": "xtd10", "language": "ja", "dataset_language": "jp", "comparable": True},
                          {**row, "dataset": "crossmodal3600", "language": "ja", "dataset_language": "ja", "comparable": True},
                          {**row, "dataset": "crossmodal3600", "language": "de", "dataset_language": "de", "comparable": False}])
    t = multilingual_table(None, frame).set_index("language")

    def published(dataset, language):
        hit = pub[(pub.release == release) & (pub.dataset == dataset) & (pub.language == language)]
        return float(hit["mean_recall@1"].iloc[0])

    assert t.loc["ja", "xtd10 mean_recall@1 published"] == published("multilingual_mscoco", "jp")  # the same data
    assert t.loc["ja", "crossmodal3600 mean_recall@1 published"] == published("crossmodal3600", "ja")
    assert pd.isna(t.loc["de", "crossmodal3600 mean_recall@1 published"])  # not the whole benchmark: no number
    # open_clip's own table: its mean_recall@1 is the mean of the two recall@1 columns
    assert (pub["mean_recall@1"] - (pub["image_retrieval_recall@1"] + pub["text_retrieval_recall@1"]) / 2).abs().max() < 0.006


def test_a_shift_keeps_its_classes_that_the_language_names(tmp_path):
    """ImageNet-R in French: its 200 wnids at their ImageNet positions, kept where Babel-ImageNet's French names
    them, in ImageNet-R's label order; no model needed."""
    names_file = multilingual("babel_imagenet.json")
    from zeroshot.data.imagenet import subset_positions, wnid_lists
    from zeroshot.data.readers import build_dataset
    from zeroshot.pipeline import apply_language
    from zeroshot.prompts.sets import PromptSet

    wnids = sorted(wnid_lists()["imagenet_r"])
    for w in wnids:
        (tmp_path / "imagenet-r" / w).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "imagenet-r" / w / "0.png")
    c = make_cfg("eval", "dataset=imagenet_r", f"dataset.root={tmp_path}", "prompts.language=fr",
                 f"prompts.babel_names={names_file}",
                 f"prompts.babel_templates={multilingual('nllb_dist13b_prompts.json')}")
    lang = L.language_prompts(c.prompts)
    ds, pset, names, record = apply_language(c, build_dataset(c.dataset), PromptSet("imagenet", ["{}"]), lang)
    fr = dict(zip(lang.positions, lang.names))
    kept = [(w, p) for w, p in zip(wnids, subset_positions("imagenet_r")) if p in fr]
    assert 0 < len(kept) < 200 and record["n_classes_left_out"] == 200 - len(kept) == record["n_images_left_out"]
    assert names == [fr[p] for _, p in kept] and pset.name == "imagenet-fr-babel"
    assert [Path(p).parent.name for p, _ in ds.source.samples] == [w for w, _ in kept]
    assert ds.listed_labels() == list(range(len(kept)))
    objectnet = compose_prompts_on("objectnet")
    with pytest.raises(PromptError, match="applies to ImageNet and its shifts"):
        apply_language(objectnet, None, PromptSet("x", ["{}"]), lang)


def compose_prompts_on(dataset: str):
    return make_cfg("eval", f"dataset={dataset}", "prompts.language=fr")
