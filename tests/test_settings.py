"""settings.py is the one home of the input checks on settings: every key it checks is one the YAML declares (a
misspelt key there would check nothing), every shipped default passes, a library function taking one of these
values says what the CLI says, and the CLI checks once per command, before the command runs."""
import pytest
from omegaconf import OmegaConf

from conftest import cli, make_cfg
from zeroshot.errors import UserError
from zeroshot.settings import CHOICES, LIST_CHOICES, RANGES, check_settings

COMMAND_CONFIGS = ("eval", "prompts", "report", "retrieval", "compositionality", "linear_probe")


def flat_keys(node, prefix: str = "") -> set[str]:
    out = set()
    for key, child in node.items() if isinstance(node, dict) else []:
        out |= {f"{prefix}{key}"} | flat_keys(child, f"{prefix}{key}.")
    return out


def test_every_checked_key_is_declared_and_every_default_passes():
    declared = set()
    for name in COMMAND_CONFIGS:
        cfg = make_cfg(name, *(["dataset=caption_selection"] if name == "compositionality" else []))
        check_settings(cfg)  # the shipped defaults are valid
        declared |= flat_keys(OmegaConf.to_container(cfg, resolve=False))
    unknown = sorted(k for k in [*RANGES, *CHOICES, *LIST_CHOICES] if k not in declared)
    assert not unknown, f"settings.py checks keys no command config declares: {unknown}"


def test_the_library_says_what_the_cli_says():
    from zeroshot.classifier import check_aggregate
    from zeroshot.label_free import settings_from
    from zeroshot.prompts.descriptions import class_prompts
    from zeroshot.prompts.waffle import control_texts

    p = make_cfg("eval").prompts
    cases = [
        ("prompts.aggregate=max", lambda: check_aggregate("max")),
        ("prompts.descriptions_mode=lines", lambda: class_prompts([["x"]], ["cat"], ["{}"], mode="lines")),
        ("prompts.combine=both", lambda: class_prompts([["x"]], ["cat"], ["{}"], combine="both")),
        ("prompts.weighting=best", lambda: settings_from(OmegaConf.merge(p, {"weighting": "best"}))),
        ("prompts.weight_temperature=0", lambda: settings_from(OmegaConf.merge(p, {"weight_temperature": 0}))),
        ("prompts.controls=[reversed]", lambda: control_texts([["x"]], "reversed", 0)),
    ]
    for override, library in cases:
        with pytest.raises(UserError) as from_cli:
            check_settings(OmegaConf.from_dotlist([override]))
        with pytest.raises(UserError) as python:
            library()
        assert str(python.value) == str(from_cli.value) and type(python.value) is type(from_cli.value), override
        assert override.split("=")[0] in str(from_cli.value) and "\n" not in str(from_cli.value)


@pytest.mark.cli
def test_the_cli_checks_settings_once_before_the_command(tmp_path):
    """The one dispatch (cli.run_task) checks every setting once; the pipeline the command runs does not again."""
    code = ("import sys\n"
            "import zeroshot.settings as s\n"
            "calls = []\n"
            "real = s.check_settings\n"
            "s.check_settings = lambda cfg: calls.append(1) or real(cfg)\n"
            "import zeroshot.commands.evaluate as e\n"
            "import zeroshot.pipeline as p\n"
            "e.evaluate = lambda cfg: print('RAN', len(calls), p.runtime(cfg)[0], flush=True)\n"
            "from zeroshot.__main__ import main\n"
            "code = main(sys.argv[1:])\n"
            "print('CALLS', len(calls))\n"
            "sys.exit(code)\n")
    common = ["model.name=ViT-B/32", "device=cpu", "figures=false", f"results_dir={tmp_path}"]
    r = cli("eval", *common, code=code, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RAN 1 cpu" in r.stdout and "CALLS 1" in r.stdout, r.stdout
    r = cli("eval", *common, "batch_size=0", code=code, cwd=tmp_path, timeout=300)
    assert r.returncode == 1 and "RAN" not in r.stdout, (r.stdout, r.stderr[-3000:])
    assert "zeroshot eval: error: batch_size=0 is out of range" in r.stderr and "Traceback" not in r.stderr
