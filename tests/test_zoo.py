"""The model zoo: CLIP-family checkpoints from every source layout, exact against their reference library.

Every layout is written by the reference library's own save code: open_clip's save_for_hf (its Hub folder),
torch.save of open_clip's state dict (a bare file), transformers' save_pretrained.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zeroshot
import zeroshot.models.loader
from zeroshot.errors import ArchitectureError
from zeroshot.models.config import openclip_models
from conftest import make_cfg, openclip_model, rel_err, save_openclip_folder

PROMPTS = ["a photo of a dog.", "a blurry photo of a large red car parked by the sea.", "x"]


def tokens_for(model, ref_tokenizer=None, context: int = 77, vocab: int = 49408) -> torch.Tensor:
    if vocab == 49408:
        return zeroshot.tokenize(PROMPTS, context_length=context)
    torch.manual_seed(3)  # another vocabulary (CLIPA's BERT): random ids stand in for its tokenizer
    return torch.randint(1, vocab, (3, context))


def features(model, n_px: int, text: torch.Tensor):
    torch.manual_seed(1)
    images = torch.randn(2, 3, n_px, n_px)
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def assert_parity(ref, ours, n_px, text, tol=1e-4):
    (ri, rt), (oi, ot) = features(ref, n_px, text), features(ours, n_px, text)
    assert rel_err(ri, oi) < tol and rel_err(rt, ot) < tol, (rel_err(ri, oi), rel_err(rt, ot))


# ---------------------------------------------------------------------- open_clip's Hub folders

@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "RN50", "ViT-M-16-alt", "ViT-L-14-CLIPA"])
def test_open_clip_folder_parity(open_clip, tmp_path, name):
    """GELU configs (open_clip's default), LayerScale (ViT-M-16-alt), and CLIPA (no ln_pre, mean pooling,
    bidirectional text read at the last position), each saved by open_clip as its Hub folder."""
    cfg = openclip_models()[name]
    ref = openclip_model(open_clip, cfg)
    folder = save_openclip_folder(ref, cfg, tmp_path / name)
    ours = zeroshot.models.loader.load_model(folder)
    c = ours.config
    assert ours.identity.activation == "gelu" and "open_clip_config.json" in ours.identity.activation_from
    assert ours.identity.architecture == name and ours.identity.assumed == []
    text = tokens_for(ours, context=c.context_length, vocab=c.vocab_size)
    assert_parity(ref, ours, c.image_resolution, text)


@pytest.mark.slow
def test_gelu_weights_under_quickgelu_are_wrong(open_clip, tmp_path):
    """The bug this zoo fixes: open_clip's GELU ViT-B-32 read with QuickGELU is off by ~1e-2, not 1e-7."""
    cfg = openclip_models()["ViT-B-32"]
    ref = openclip_model(open_clip, cfg)
    path = tmp_path / "vit_b32_gelu.pt"
    torch.save(ref.state_dict(), path)
    wrong = zeroshot.models.loader.load_model(path, activation="quick_gelu")
    right = zeroshot.models.loader.load_model(path, activation="gelu")
    text = tokens_for(right)
    (ri, rt), (wi, wt) = features(ref, 224, text), features(wrong, 224, text)
    assert rel_err(ri, wi) > 1e-3 and rel_err(rt, wt) > 1e-3
    assert_parity(ref, right, 224, text)
    assert right.identity.activation_from == "given (model.activation)"


def test_bare_state_dict_activation_is_assumed_and_said(open_clip, tmp_path, capsys):
    ref = openclip_model(open_clip, openclip_models()["ViT-B-32"])
    path = tmp_path / "run_epoch_32.pt"
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = zeroshot.models.loader.load_model(path)
    err = capsys.readouterr().err
    assert "assumed activation quick_gelu" in err and "model.activation=gelu" in err
    assert model.identity.activation_from == "assumed" and model.identity.architecture == "ViT-B-32"
    assert any(a.startswith("activation quick_gelu") for a in model.identity.assumed)


def test_reduced_depth_bigG_widths(open_clip, tmp_path):
    """ViT-bigG-14's widths (104-dim heads, MLP ratio 4.9231, text 1280/20 heads) at two layers a tower."""
    cfg = copy.deepcopy(openclip_models()["ViT-bigG-14"])
    cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"] = 2, 2
    ref = openclip_model(open_clip, cfg)
    ours = zeroshot.models.loader.load_model(save_openclip_folder(ref, cfg, tmp_path / "bigG2"))
    assert ours.config.vision_heads == 16 and ours.config.transformer_heads == 20
    assert ours.visual.transformer.resblocks[0].mlp.c_fc.out_features == 8192
    assert_parity(ref, ours, 224, tokens_for(ours))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-L-14", "ViT-H-14"])
def test_large_open_clip_bare_state_dicts(open_clip, tmp_path, name):
    """ViT-H-14's 80-dim heads come from the known architecture with its shapes (a bare file has no config)."""
    ref = openclip_model(open_clip, openclip_models()[name])
    path = tmp_path / f"{name}.pt"
    torch.save(ref.state_dict(), path)
    text = tokens_for(None)
    expected = features(ref, 224, text)
    del ref
    ours = zeroshot.models.loader.load_model(path, activation="gelu")
    assert ours.identity.architecture == name
    if name == "ViT-H-14":
        assert ours.config.vision_head_width == 80 and ours.config.vision_heads == 16
    got = features(ours, 224, text)
    assert rel_err(expected[0], got[0]) < 1e-4 and rel_err(expected[1], got[1]) < 1e-4


def test_shape_mismatch_names_the_first_tensor(open_clip, tmp_path):
    cfg = copy.deepcopy(openclip_models()["ViT-S-32"])
    folder = save_openclip_folder(openclip_model(open_clip, cfg), cfg, tmp_path / "s32")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["heads"] = 5  # 384 is not divisible into 5 heads
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="heads do not divide"):
        zeroshot.models.loader.load_model(folder)
    config["model_cfg"]["text_cfg"]["heads"] = 6
    config["model_cfg"]["text_cfg"]["layers"] = 11  # the weights have 12 text blocks
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    zeroshot.models.loader.load_model(folder)  # shapes win over the config for what they determine: still 12 layers
    config["model_cfg"]["vision_cfg"]["head_width"] = 48  # 384 / 48 = 8 heads: loads, but the heads differ
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    assert zeroshot.models.loader.load_model(folder).config.vision_heads == 8


def test_first_mismatching_tensor_is_named(tmp_path, tiny_vit):
    from zeroshot.models.config import load_weights
    from zeroshot.models.clip import CLIP, CLIPConfig

    sd = tiny_vit.state_dict()
    bigger = CLIP(CLIPConfig(**{**tiny_vit.config.__dict__, "embed_dim": 48}))
    with pytest.raises(ArchitectureError, match="'text_projection' has shape \\(64, 32\\).*needs \\(64, 48\\)"):
        load_weights(bigger, sd, where="x.pt")


# ---------------------------------------------------------------------- transformers folders

def _hf_clip(tmp_path, act="quick_gelu", seed=0):
    import transformers  # a declared test dependency
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256,
                         max_position_embeddings=77, vocab_size=49408, hidden_act=act),
        vision_config=dict(hidden_size=96, image_size=32, patch_size=8, num_attention_heads=3, num_hidden_layers=2,
                           intermediate_size=384, hidden_act=act),
        projection_dim=32)
    model = transformers.CLIPModel(config).eval()
    folder = tmp_path / f"hf-clip-{act}"
    model.save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_transformers_clipmodel_folder(tmp_path, act):
    hf, folder = _hf_clip(tmp_path, act)
    ours = zeroshot.models.loader.load_model(folder)
    assert ours.identity.source == "transformers_folder" and ours.identity.activation == act
    assert ours.config.vision_heads == 3 and ours.preprocess_spec.size == 32
    text = zeroshot.tokenize(PROMPTS)
    (ri, rt), (oi, ot) = hf_and_ours(hf, ours, text)
    assert rel_err(ri, oi) < 1e-4 and rel_err(rt, ot) < 1e-4


def hf_and_ours(hf, ours, ids, n_px=32):
    """transformers' get_image_features/get_text_features and ours, on the same random images and token ids."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, n_px, n_px)
    with torch.no_grad():
        ri, rt = hf.get_image_features(pixel_values=images), hf.get_text_features(input_ids=ids)
        ri, rt = getattr(ri, "pooler_output", ri), getattr(rt, "pooler_output", rt)
        return (ri, rt), (ours.encode_image(images), ours.encode_text(ids))


# ---------------------------------------------------------------------- backends

@pytest.mark.slow
def test_open_clip_siglip_through_the_backend(open_clip, tmp_path):
    cfg = openclip_models()["ViT-B-16-SigLIP"]
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-16-SigLIP").eval()
    folder = save_openclip_folder(ref, cfg, tmp_path / "siglip")
    ours = zeroshot.models.loader.load_model(folder)
    assert ours.identity.backend == "open_clip" and ours.logit_bias is not None
    torch.manual_seed(3)
    text = torch.randint(1, 32000, (3, 64))
    assert_parity(ref, ours, 224, text, tol=1e-5)
    scores = torch.tensor([[2.0, -3.0]])
    from zeroshot.classifier import probabilities_from_logits

    assert torch.allclose(probabilities_from_logits(ours, scores), scores.sigmoid())  # sigmoid, not softmax


def _hf_siglip(tmp_path):
    import transformers  # a declared test dependency
    import sentencepiece as spm  # a declared test dependency
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"a photo of a {w}." for w in "cat dog bird car ship truck frog horse deer plane".split()) * 20)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=40, hard_vocab_limit=False,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=128,
                         vocab_size=60, max_position_embeddings=16),
        vision_config=dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=128,
                           image_size=32, patch_size=8))
    model = transformers.SiglipModel(config).eval()
    folder = tmp_path / "hf-siglip"
    model.save_pretrained(folder)
    transformers.SiglipTokenizer(vocab_file=str(tmp_path / "spm.model"), model_max_length=16).save_pretrained(folder)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model, folder


def test_transformers_siglip_through_the_backend(tmp_path):
    hf, folder = _hf_siglip(tmp_path)
    ours = zeroshot.models.loader.load_model(folder)
    assert ours.identity.backend == "transformers" and "siglip" in ours.identity.architecture
    ids = ours.tokenize(["a photo of a cat.", "dog"])
    assert ids.shape == (2, 16)  # padded to max_length, as SigLIP was trained
    (ri, rt), (oi, ot) = hf_and_ours(hf, ours, ids)
    assert rel_err(ri, oi) < 1e-5 and rel_err(rt, ot) < 1e-5


# ---------------------------------------------------------------------- end to end and the report

def _tiny_openclip_cfg():
    return {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def test_eval_and_report_on_open_clip_and_transformers_folders(open_clip, tmp_path):

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.report.build import build_report

    cfg = _tiny_openclip_cfg()
    oc = save_openclip_folder(openclip_model(open_clip, cfg), cfg, tmp_path / "my-openclip-run")
    _, hf = _hf_clip(tmp_path)
    images = write_imagefolder(tmp_path / "pets", ["cat", "dog"], per_class=3)
    runs = []
    for folder in (oc, hf):
        runs.append(evaluate(make_cfg("eval", "dataset=imagefolder", f"dataset.root={images}", "num_workers=0",
                                      "progress=false", tmp_path=tmp_path, checkpoint=folder)))
    report = build_report(make_cfg("report", f"inputs=[{tmp_path / 'results'}]", f"output_dir={tmp_path / 'rep'}"))
    assert runs[0]["model"] == "my-openclip-run" and runs[0]["activation"] == "gelu" and runs[0]["source"] == "openclip_folder"
    assert runs[1]["model"] == "hf-clip-quick_gelu" and runs[1]["source"] == "transformers_folder"
    md = (Path(report["report_dir"]) / "report.md").read_text()
    assert "| my-openclip-run |" in md and "| hf-clip-quick_gelu |" in md


# ---------------------------------------------------------------------- names and the Hub

def test_unknown_tag_lists_the_closest():
    with pytest.raises(ValueError, match="Closest: .*ViT-B-32/laion2b_s34b_b79k"):
        zeroshot.load("ViT-B-32/laion2b_s34b_b79")
    with pytest.raises(ValueError, match="ViT-L-14/"):
        zeroshot.load("ViT-L-14/no-such-tag-at-all")


def test_tags_table_has_activations_and_resolves_both_spellings():
    from zeroshot.models.registry import find_tag, pretrained_tags, release_of

    tags = pretrained_tags()
    assert len(tags) > 150
    assert tags[("ViT-B-32", "laion2b_s34b_b79k")]["activation"] == "gelu"
    assert tags[("ViT-B-32", "openai")]["activation"] == "quick_gelu"
    assert tags[("ViT-B-32-quickgelu", "metaclip_400m")]["activation"] == "quick_gelu"
    assert find_tag("vit-b-32/LAION2B-S34B-B79K") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert release_of("ViT-H-14-quickgelu", "dfn5b") == release_of("ViT-H-14", "dfn5b") == "ViT-H-14/dfn5b"


def _hub_files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(tmp_path):
    from fakehub import Hub, serve

    httpd, url = serve()
    Hub.repos.clear()
    yield Hub, url
    httpd.shutdown()


def _load_in_subprocess(spec: str, env: dict) -> subprocess.CompletedProcess:
    code = ("import json, zeroshot; m, _ = zeroshot.load(%r); "
            "print(json.dumps({k: v for k, v in m.identity.as_dict().items() if k in ('label','revision','source','release')}))") % spec
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


@pytest.mark.cli
def test_hub_download_offline_and_missing(open_clip, tmp_path, hub):
    Hub, url = hub
    cfg = _tiny_openclip_cfg()
    Hub.repos["lab/tiny-clip"] = _hub_files(save_openclip_folder(openclip_model(open_clip, cfg), cfg, tmp_path / "tc"))
    Hub.repos["lab/readme-only"] = {"README.md": b"# nothing here"}
    env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}

    good = _load_in_subprocess("hf-hub:lab/tiny-clip", env)
    assert good.returncode == 0, good.stderr[-2000:]
    ident = json.loads(good.stdout.strip().splitlines()[-1])
    assert ident["source"] == "hf_hub" and ident["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert ident["label"] == "hf-hub:lab/tiny-clip@0123456789"

    cached = _load_in_subprocess("hf-hub:lab/tiny-clip", {**env, "HF_HUB_OFFLINE": "1"})
    assert cached.returncode == 0, cached.stderr[-2000:]

    for spec, expect in [("hf-hub:lab/other", "hf download lab/other"), ("hf-hub:lab/nope", "no repository 'lab/nope'"),
                         ("hf-hub:lab/readme-only", "holds no CLIP model")]:
        offline = {**env, "HF_HUB_OFFLINE": "1"} if spec.endswith("other") else env
        r = _load_in_subprocess(spec, offline)
        assert r.returncode != 0 and expect in r.stderr, r.stderr[-2000:]


TAG_SCRIPT = """
import json, sys
from zeroshot.models import config as architecture, loader as pretrained, registry as sources
cfg = json.loads(sys.argv[1])
tags = dict(sources.pretrained_tags())
tags[("Tiny-8", "lab_v1")] = {"arch": "Tiny-8", "tag": "lab_v1", "hf_hub": "lab/tiny-tag/", "url": "", "activation": "gelu",
                              "mean": "0.5 0.5 0.5", "std": "0.5 0.5 0.5", "interpolation": "bilinear", "resize_mode": "squash"}
sources.pretrained_tags = lambda: tags
models = dict(architecture.openclip_models())
models["Tiny-8"] = cfg
architecture.openclip_models = lambda: models
print(json.dumps(pretrained.load_model("Tiny-8/lab_v1").identity.as_dict()))
"""


@pytest.mark.cli
def test_tag_resolves_through_the_hub(open_clip, tmp_path, hub):
    """An ARCH/TAG row names a hub repo: the weights come through huggingface_hub, the activation and the
    preprocessing from the row (the table is extended in the child process; the Hub is the local one)."""
    Hub, url = hub
    cfg = _tiny_openclip_cfg()
    folder = save_openclip_folder(openclip_model(open_clip, cfg), cfg, tmp_path / "t")
    Hub.repos["lab/tiny-tag"] = {"open_clip_model.safetensors": (folder / "open_clip_model.safetensors").read_bytes()}
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    r = subprocess.run([sys.executable, "-c", TAG_SCRIPT, json.dumps(cfg)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ident = json.loads(r.stdout.strip().splitlines()[-1])
    assert ident["release"] == "Tiny-8/lab_v1" and ident["activation"] == "gelu" and "registry" in ident["activation_from"]
    assert ident["preprocess"]["resize_mode"] == "squash" and ident["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert ident["location"] == "hf-hub:lab/tiny-tag" and ident["revision"] == "0123456789abcdef0123456789abcdef01234567"


def test_eval_and_prompts_through_a_backend(tmp_path):
    """eval, prompts and report run on a model beyond the family (transformers SigLIP), with its own tokenizer,
    its own preprocessing and sigmoid scoring with logit_bias."""
    import numpy as np

    from datagen import write_imagefolder
    from zeroshot.commands.evaluate import evaluate
    from zeroshot.commands.prompts import run_prompts

    _, folder = _hf_siglip(tmp_path)
    images = write_imagefolder(tmp_path / "animals", ["cat", "dog", "bird"], per_class=2)
    common = [f"model.checkpoint={folder}", "dataset=imagefolder", f"dataset.root={images}", "num_workers=0",
              "progress=false", f"cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'results'}"]
    m = evaluate(make_cfg("eval", *common))
    s = run_prompts(make_cfg("prompts", *common, 'prompts.templates=["a photo of a {}.","a {}."]',
                             "bootstrap=20"))
    assert m["backend"] == "transformers" and m["n_images"] == 6 and "SiglipImageProcessor" in m["preprocess"]["transform"]
    z = np.load(Path(m["run_dir"]) / "logits.npz")
    assert z["logits"].shape == (6, 3)
    assert s["images_from_cache"] == 6  # the eval filled the feature cache for the same weights and images


def test_a_transformers_folder_of_another_kind_says_what_it_holds(tmp_path):
    import transformers  # a declared test dependency
    folder = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=100)).save_pretrained(folder)
    with pytest.raises(Exception, match="BertModel \\(model_type 'bert'\\), not an image-text model"):
        zeroshot.models.loader.load_model(folder)


@pytest.mark.parametrize("text_cfg", [
    {"pool_type": "eos", "eos_id": 2},  # MetaCLIP 2's worldwide towers read the first end-of-sequence id
    {"pool_type": "first"},
    {"pool_type": "last", "no_causal_mask": True},  # CLIPA's bidirectional text
    {"pool_type": "argmax", "ls_init_value": 0.1, "mlp_ratio": 3.0},
], ids=["eos", "first", "last-bidirectional", "argmax-layerscale"])
def test_every_text_pooling_with_the_fast_paths(open_clip, tmp_path, text_cfg):
    """Each readout keeps the trimmed batch and the readout-only last block exact (small widths, random ids with
    the end-of-sequence id placed at different positions)."""
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
                                          "pool_type": "avg", "final_ln_after_pool": True, "no_ln_pre": True},
           "text_cfg": {"context_length": 20, "vocab_size": 500, "width": 64, "heads": 2, "layers": 3, **text_cfg}}
    ref = openclip_model(open_clip, cfg)
    ours = zeroshot.models.loader.load_model(save_openclip_folder(ref, cfg, tmp_path / "m"))
    torch.manual_seed(5)
    ids = torch.randint(3, 400, (4, 20))
    for row, end in enumerate((5, 9, 19, 12)):
        ids[row, end] = 2 if text_cfg.get("pool_type") == "eos" else 499  # the readout token
        ids[row, end + 1:] = 0  # padding
    assert_parity(ref, ours, 32, ids)
    with pytest.raises(Exception, match="500-token vocabulary, not CLIP's BPE"):  # no tokenizer named: said when needed
        ours.tokenize(["a photo of a cat."])
