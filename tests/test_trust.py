"""The trust promise under hostile files and faults (docs/trust.md): no code from data, checksummed caches,
images listed once, special files never opened, undeclared config keys refused, files others can read."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, stdin: str = "", timeout: int = 120, cwd=None, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


# ------------------------------------------------------------------------------ 1. no code from data

def _custom_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder, marker = tmp_path / "evil_model", tmp_path / "MARKER"
    folder.mkdir()
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n")
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder, marker


@pytest.mark.parametrize("backend", ["transformers", None])
def test_custom_code_never_runs_even_with_yes_on_stdin(tmp_path, backend):
    folder, marker = _custom_code_folder(tmp_path)
    r = run_python(f"import zeroshot; zeroshot.load({str(folder)!r}, device='cpu', backend={backend!r})",
                   stdin="y\ny\ny\n", timeout=180)
    assert not marker.exists(), "the model folder's code ran"
    assert "CheckpointError" in r.stderr and str(folder) in r.stderr and "auto_map" in r.stderr, r.stderr[-2000:]
    assert "AutoModel -> modeling_evil.EvilModel" in r.stderr or "AutoConfig -> configuration_evil.EvilConfig" in r.stderr
    assert "[y/N]" not in r.stdout + r.stderr


def test_loaders_pass_trust_remote_code_false():
    """Every from_pretrained call in the package says trust_remote_code=False itself (never the library default)."""
    import ast

    calls = []
    for path in (REPO / "zeroshot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                kw = {k.arg: k.value for k in node.keywords}
                calls.append((path.name, node.lineno))
                assert isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is False, \
                    f"{path}:{node.lineno} calls from_pretrained without trust_remote_code=False"
    assert len(calls) >= 3
