"""Every config in the registry composes through Hydra and says something true: each model's name resolves as a
name (nothing is downloaded) and its `arch` is that release's architecture; each dataset's prompt set exists
and names as many classes as the dataset has; every prompts file composes on its dataset; every suite lists
models and datasets that exist. Defaults live in YAML: no `???` is left unfilled where a default is promised.
"""
import types

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, with_base

CONFIGS = REPO / "configs"


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if not p.stem.startswith("_"))  # _x: a base


@pytest.fixture(scope="module")
def composer():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        yield compose


@pytest.mark.parametrize("model", names("model"))
def test_every_model_config(composer, model):
    from zeroshot.models.config import base_name
    from zeroshot.models.registry import OPENAI_NAMES, canonical_name, find_tag, pretrained_tags
    from zeroshot.models.sources import check_name

    m = composer("eval", overrides=[f"model={model}"]).model
    assert set(m) == {"name", "arch", "checkpoint", "activation", "backend", "preprocess"}, "model configs inherit default.yaml"
    kind = check_name(m.name)
    assert kind in ("openai", "openclip_tag")
    if kind == "openai":
        arch = OPENAI_NAMES[canonical_name(m.name)]
    else:
        arch, tag = find_tag(m.name)
        assert pretrained_tags()[(arch, tag)]["activation"] in ("quick_gelu", "gelu", "gelu_tanh")
    if m.arch is not None:  # the promise a config makes must be the release's architecture
        assert base_name(m.arch).lower() == base_name(arch).removesuffix("-quickgelu").lower(), (m.arch, arch)


@pytest.mark.parametrize("dataset", names("dataset"))
def test_every_dataset_config_and_its_prompts(composer, dataset):
    from zeroshot.pipeline import resolve_classnames, resolve_prompts

    cfg = composer("eval", overrides=[f"dataset={dataset}"])
    d = cfg.dataset
    for key in ("name", "kind", "split", "metric", "download", "downloadable"):
        assert key in d, f"dataset {dataset} lacks {key}"
    assert d.name == dataset
    path = CONFIGS / "dataset" / f"{dataset}.yaml"
    composed = {k: v for k, v in OmegaConf.to_container(d).items() if k != "allow_duplicate_classnames"}  # eval.yaml's
    assert with_base(path) == composed, "conftest.with_base reads a dataset config as Hydra composes it"
    in_file = yaml.safe_load(path.read_text())
    for key in ("task", "languages"):  # suite.py and the retrieval and selection registries read these from the file
        assert in_file.get(key) == composed.get(key), f"{dataset}: `{key}` belongs in its own file, not in a base"
    if d.get("task") == "retrieval" or d.prompts in ("from_dataset", None) or d.kind in ("imagefolder", "csv", "hf"):
        return  # captions, or class names that come with the data
    own = [f"class {i}" for i in range(d.num_classes)] if d.kind == "objectnet" else None  # ObjectNet names its own
    fake = types.SimpleNamespace(classes=own, shipped_templates=None)
    pset = resolve_prompts(cfg, fake)
    classes = resolve_classnames(cfg, pset, fake)
    assert len(classes) == d.num_classes and pset.templates


def test_a_base_is_no_dataset_choice():
    from zeroshot.cli import check_choices

    bases = sorted(p.stem for p in (CONFIGS / "dataset").glob("_*.yaml"))
    assert bases == ["_torchvision", "_wds"] and not set(bases) & set(names("dataset"))
    assert "unknown dataset '_wds'" in check_choices(["dataset=_wds"])
    assert "_torchvision" not in check_choices(["dataset=nope"]) and "cifar10" in check_choices(["dataset=nope"])


@pytest.mark.parametrize("prompts", names("prompts"))
def test_every_prompts_config_composes(composer, prompts):
    from zeroshot.prompts.class_sets import KEYS

    p = composer("eval", overrides=[f"prompts={prompts}"]).prompts
    assert set(KEYS) <= set(p), "prompt configs inherit configs/prompts/dataset.yaml"
    assert p.name is not None


@pytest.mark.parametrize("suite", names("suite"))
def test_every_suite_names_configs_that_exist(composer, suite):
    s = composer("report", overrides=[f"suite={suite}"]).suite
    models, datasets = set(names("model")), set(names("dataset"))
    assert set(s.models) <= models, sorted(set(s.models) - models)
    listed = [str(d).split(":")[0] for d in (s.get("datasets") or s.get("tasks") or [])]  # name:language entries
    assert listed and set(listed) <= datasets, sorted(set(listed) - datasets)


@pytest.mark.parametrize("command", ["eval", "prompts", "linear_probe", "report", "compare", "retrieval", "compositionality"])
def test_every_command_config_composes_with_only_required_values_missing(composer, command):
    cfg = composer(command)
    missing = sorted(OmegaConf.missing_keys(cfg))
    # `???` marks what the user must say; everything else has its default in YAML
    assert all(k.startswith(("dataset.", "model.")) for k in missing), missing


def literal_defaults(source: str) -> list[str]:
    """Every `cfg[...].get("key", default)` in the source, whatever its quotes or line breaks (parsed, not grepped)."""
    import ast

    def root(node):
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node.id if isinstance(node, ast.Name) else None

    return [f"{node.lineno}: {ast.unparse(node)}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and root(node.func.value) == "cfg" and (len(node.args) > 1 or node.keywords)]


def test_no_literal_defaults_in_the_code():
    """`cfg.get("split", "test")` repeats a YAML default in code; the code reads the config it was given."""
    offenders = [f"{path.relative_to(REPO)}:{hit}" for path in (REPO / "zeroshot").rglob("*.py")
                 for hit in literal_defaults(path.read_text())]
    assert offenders == []
    # the check sees what a grep for double quotes did not
    assert len(literal_defaults("cfg.get('split', 'test')\ncfg.dataset.get(\n    \"a\", None)\ncfg.get('x')")) == 2
