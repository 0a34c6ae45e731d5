"""A fresh `pip install -e ".[test]"` provides every module the tests and the package import.

Checked statically (a real fresh install of torch is ~5.5 GB and minutes): every top-level import in tests/ and
zeroshot/ maps (importlib.metadata.packages_distributions) to a distribution that pyproject declares, and the
reference libraries the tests drive are followed into their own module-level imports, which must be declared by
their metadata or ours (clip-benchmark imports `requests` without declaring it: in a fresh environment its
tests skipped with "could not import"). A slow test resolves the declared requirements in a real virtual
environment with pip, offline (--no-index --dry-run): nothing is downloaded.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCAL = {p.stem for p in (REPO / "tests").glob("*.py")} | {"zeroshot"}
# imported directly but provided by a declared distribution that requires them, and cannot come without them:
TRANSITIVE = {
    "omegaconf": "hydra-core's config objects are omegaconf's: Hydra hands every command an omegaconf DictConfig",
    "hydra_plugins": "the namespace hydra-joblib-launcher (declared) installs its launcher into",
}
# modules a reference library imports that the tests provide themselves:
SHIMMED = {"pkg_resources": "openai-clip imports pkg_resources.packaging, which new setuptools lacks: conftest's "
                            "openai_clip fixture puts packaging there"}
# reference libraries whose own module-level imports are followed (their metadata is what failed before)
FOLLOWED = {"clip-benchmark", "openai-clip", "open-clip-torch", "webdataset", "hydra-joblib-launcher"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    return {norm(Requirement(r).name) for r in reqs}


def closure(names: set[str]) -> set[str]:
    """The distributions these require, transitively (markers evaluated here, extras not taken)."""
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:  # an optional extra not installed here: it brings nothing here
            continue
        for r in requires:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return out


def module_imports(tree: ast.Module, package: str = "") -> set[str]:
    """Absolute module names imported at module level (not inside functions, `try: ... except ImportError`, or
    `if TYPE_CHECKING`); relative imports resolved against `package`."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # maybe submodules: kept if they resolve
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try) and not guarded(node.handlers):
                visit(node.body)
    visit(tree.body)
    return found


def source_of(module: str) -> tuple[Path, bool] | None:
    """The file of an installed module, found on disk without importing anything (package?, path)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return (Path(spec.origin), bool(spec.submodule_search_locations)) if spec.origin else None
    for folder in spec.submodule_search_locations or []:
        base = Path(folder).joinpath(*rest)
        if (base / "__init__.py").is_file():
            return base / "__init__.py", True
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py"), False
    return None


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n and n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] not in LOCAL}


def guarded(handlers) -> bool:
    return any(h.type is None or "ImportError" in ast.unparse(h.type) for h in handlers)


def our_imports(folder: str) -> set[str]:
    """Every absolute import in the folder's files, at any depth, except those guarded by `except ImportError`."""
    out: set[str] = set()
    for path in (REPO / folder).rglob("*.py"):
        tree = ast.parse(path.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and guarded(t.handlers)
                    for stmt in t.body for n in ast.walk(stmt)}
        for n in ast.walk(tree):
            if id(n) in optional:
                continue
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                out.add(n.module)
            elif isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
    return third_party(out)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def distribution_of(top: str) -> set[str]:
    return {norm(d) for d in _distributions().get(top, [])}


@pytest.mark.parametrize("folder, extras", [("tests", ("test",)), ("zeroshot", ("open_clip", "transformers", "launchers", "hf", "mlflow", "tensorboard", "wandb"))])
def test_every_import_is_declared(folder, extras):
    """tests/ may use the dependencies and the [test] extra; zeroshot/ the dependencies and its optional extras."""
    allowed = declared(extras)
    missing = []
    for top in sorted({m.split(".")[0] for m in our_imports(folder)}):
        dists = distribution_of(top)
        if top in TRANSITIVE:
            assert dists and dists <= closure(allowed), f"{top}: {TRANSITIVE[top]}, yet no declared distribution brings it"
        elif not dists & allowed:
            missing.append(f"{top} (distribution {', '.join(sorted(dists)) or 'not installed'})")
    assert missing == [], f"{folder}/ imports modules that pyproject does not declare: {missing}"


def test_reference_libraries_bring_what_they_import():
    """The modules the tests import from the reference libraries, followed through their own package: every
    third-party module they import at module level comes from a distribution their metadata or ours declares."""
    provided = closure(declared(("test",)))
    seen, todo, missing = set(), sorted(our_imports("tests")), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        dists = distribution_of(module.split(".")[0])
        found = source_of(module) if dists & FOLLOWED else None
        if found is None:
            continue
        path, package = found
        imports = third_party(module_imports(ast.parse(path.read_text()), module if package else module.rpartition(".")[0]))
        for name in imports:
            owner = distribution_of(name.split(".")[0])
            if owner & FOLLOWED or not owner:
                todo.append(name)  # within a followed library (or a submodule name that may not exist): follow it
            if name.split(".")[0] in SHIMMED:
                continue
            if not owner and source_of(name.split(".")[0]) is None:
                missing.append(f"{module} imports {name}, which is not installed")
            elif owner and not owner & provided:
                missing.append(f"{module} imports {name} ({', '.join(sorted(owner))}), which no declared requirement brings")
    assert len(seen) > 20  # the walk really went into the libraries
    assert missing == [], missing


@pytest.mark.wheel
@pytest.mark.slow
def test_declared_requirements_resolve_in_a_fresh_venv(tmp_path):
    """A real virtual environment and pip's resolver, offline: every requirement of pyproject's dependencies and
    [test] extra, and all of theirs, resolves to what is installed here (--no-index: nothing is downloaded;
    the venv sees this interpreter's packages, as a wheel cache would provide them)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    venv = tmp_path / "venv"
    # --without-pip: a venv's own old setuptools would shadow the one torch requires; this pip drives the venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True,
                   timeout=300)
    report = tmp_path / "report.json"
    # this machine's pip settings (constraints, find-links, extra indexes) are not a fresh install's
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--dry-run",
                        "--no-index", "--quiet",
                        "--report", str(report), *reqs], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    would_install = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert would_install == [], f"pip would have to fetch {would_install}"
