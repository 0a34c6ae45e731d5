"""The layout's rules, read from the import graph (every import, lazy ones included, parsed with ast).

Rooms are the subpackages (models, data, features, prompts, experiments, metrics, figures, report, commands) and
the top-level modules. Each room may import only the rooms its row of ALLOWED names; on top: models/ needs no
Hydra and no pandas, only figures/ imports matplotlib, data/ never reaches models/ (not even through another
room), no command imports another command, and no module imports itself back through a cycle.
"""
import ast
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "zeroshot"
BASE = {"errors", "log", "paths", "files", "settings"}  # shared by everything
ALLOWED = {
    "models": BASE,
    "data": BASE | {"prompts"},  # class-names files (prompts.sets); never the models, see below
    "metrics": BASE,  # numbers only: the figures of them are drawn in figures/
    "figures": BASE | {"metrics"},  # every figure, and the helper process that draws them; the only room with matplotlib
    "gallery": BASE | {"metrics"},  # error galleries: thumbnails and HTML from a run's own images
    "prompts": BASE | {"models", "classifier"},
    "classifier": BASE | {"models", "features"},
    "features": BASE | {"data", "distributed"},  # features/sharded.py: extraction under torchrun
    "distributed": BASE,  # the process group and how work is dealt to ranks
    "experiments": BASE | {"classifier", "metrics", "figures"},
    "record": BASE | {"zeroshot", "distributed", "features", "prompts", "pipeline", "label_free", "runs", "figures"},
    "runs": BASE,  # RunRecord: metrics.json as a dataclass, read by report/, compare and the trackers
    "pipeline": BASE | {"models", "data", "features", "prompts", "classifier", "distributed", "label_free", "metrics"},
    "label_free": BASE | {"classifier", "prompts"},  # ZPE, CARPRT, CHiLS: torch on features, no run machinery
    "label_free_run": BASE | {"pipeline", "label_free", "data", "features", "distributed", "figures"},
    "lab": BASE | {"pipeline", "label_free", "label_free_run", "classifier", "metrics", "features", "prompts"},
    "suite": BASE | {"data", "models"},
    "trackers": BASE | {"runs"},  # logs a finished run's record to MLflow, TensorBoard, W&B or CSV (logger=...)
    "report": BASE | {"metrics", "figures", "record", "runs", "gallery"},  # reads run records; never launches a run
    "commands": BASE | {"models", "data", "features", "prompts", "experiments", "metrics", "report", "classifier",
                        "distributed", "pipeline", "record", "figures", "suite", "gallery",
                        "trackers", "label_free", "label_free_run", "runs"},
    "__main__": BASE | {"cli", "zeroshot"},  # the table of commands; zeroshot: __version__ for --version
    "cli": BASE | {"distributed", "figures", "declared"},  # argv -> the checked config -> the command's function
    "declared": {"errors", "paths"},  # the composed config's keys against the YAML's (no torch, before a run)
    "zeroshot": set(),  # __init__: the public API, imported lazily by name
    **{m: set() for m in BASE},
}
ALLOWED["files"] = {"errors", "log", "paths"}
ALLOWED["log"] = set()
ALLOWED["settings"] = {"errors"}
BANNED_EXTERNAL = {"models": {"hydra", "omegaconf", "pandas"},
                   "figures": {"torch"}, "gallery": {"torch"}}  # figures are drawn in a helper process without torch
ONLY_IN = {"matplotlib": "figures"}  # an external package that one room alone imports


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg: Path = PKG) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> zeroshot modules it imports, module -> top-level external packages it imports)."""
    modules = {module_name(p): p for p in pkg.rglob("*.py")}
    inner, outer = {}, {}
    for name, path in modules.items():
        deps, ext = set(), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "zeroshot":
                    for alias in node.names:  # `from zeroshot.models import loader` imports the module loader
                        sub = f"{node.module}.{alias.name}"
                        deps.add(sub if sub in modules else node.module)
                else:
                    ext.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name} uses a relative import; the package uses absolute imports")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    (deps if alias.name.split(".")[0] == "zeroshot" else ext).add(
                        alias.name if alias.name.split(".")[0] == "zeroshot" else alias.name.split(".")[0])
        inner[name], outer[name] = deps - {name}, ext
    return inner, outer


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "zeroshot"


def violations(inner: dict[str, set[str]], outer: dict[str, set[str]]) -> list[str]:
    found = []
    for m, deps in sorted(inner.items()):
        r = room(m)
        if r not in ALLOWED:
            found.append(f"{m}: room {r!r} has no row in ALLOWED (a new module: say what it may import)")
            continue
        for d in sorted(deps):
            if room(d) != r and room(d) not in ALLOWED[r]:
                found.append(f"{m} imports {d}: {r} may import only {sorted(ALLOWED[r])}")
            if r == "commands" and room(d) == "commands" and d != "zeroshot.commands":
                found.append(f"{m} imports {d}: commands never import each other")
        for e in sorted(outer[m] & BANNED_EXTERNAL.get(r, set())):
            found.append(f"{m} imports {e}: {r}/ stays free of {sorted(BANNED_EXTERNAL[r])}")
        for e in sorted(e for e in outer[m] if e in ONLY_IN and ONLY_IN[e] != r):
            found.append(f"{m} imports {e}: only {ONLY_IN[e]}/ imports {e}")
    for m in sorted(inner):  # data/ reaches models/ through no path at all
        if room(m) == "data":
            reached = reachable(inner, m)
            bad = sorted(x for x in reached if room(x) == "models")
            if bad:
                found.append(f"{m} reaches {bad[0]}: data/ must not depend on models/")
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(inner)]
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for d in graph.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, out = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if v not in graph:
                continue
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if not state.get(u):
            visit(u)
    return out


def test_the_package_follows_the_layout_rules():
    inner, outer = import_graph()
    assert len(inner) > 40 and {"models", "data", "features", "prompts", "metrics", "report", "commands"} <= set(map(room, inner))
    assert violations(inner, outer) == []


@pytest.mark.parametrize("graph,expected", [
    ({"zeroshot.data.readers": {"zeroshot.models.loader"}, "zeroshot.models.loader": set()}, "data/ must not depend on models/"),
    ({"zeroshot.data.readers": {"zeroshot.prompts.sets"}, "zeroshot.prompts.sets": {"zeroshot.models.tokenizer"},
      "zeroshot.models.tokenizer": set()}, "data/ must not depend on models/"),
    ({"zeroshot.commands.evaluate": {"zeroshot.commands.retrieval"}, "zeroshot.commands.retrieval": set()},
     "commands never import each other"),
    ({"zeroshot.report.build": {"zeroshot.suite"}, "zeroshot.suite": set()}, "report may import only"),
    ({"zeroshot.metrics.calibration": {"zeroshot.figures.run"}, "zeroshot.figures.run": set()}, "metrics may import only"),
    ({"zeroshot.pipeline": {"zeroshot.record"}, "zeroshot.record": {"zeroshot.pipeline"}}, "import cycle"),
])
def test_the_rules_catch_what_they_forbid(graph, expected):
    """Each rule, fed a graph that breaks it, says so: the layout test can fail."""
    outer = {m: set() for m in graph}
    assert any(expected in v for v in violations(graph, outer)), violations(graph, outer)


def test_models_stay_free_of_hydra_and_pandas():
    assert any("stays free of" in v for v in violations({"zeroshot.models.clip": set()}, {"zeroshot.models.clip": {"pandas"}}))


def test_matplotlib_is_imported_only_in_figures():
    assert violations({"zeroshot.figures.run": set()}, {"zeroshot.figures.run": {"matplotlib", "numpy"}}) == []
    for module in ("zeroshot.metrics.calibration", "zeroshot.report.aggregates", "zeroshot.gallery"):
        assert any("only figures/ imports matplotlib" in v for v in violations({module: set()}, {module: {"matplotlib"}}))
