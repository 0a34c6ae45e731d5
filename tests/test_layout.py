"""The layout's rules, read from the import graph (every import, lazy ones included, parsed with ast).

Rooms are the subpackages (models, data, features, prompts, experiments, metrics, figures, report, commands) and
the top-level modules. Each room may import only the rooms its row of ALLOWED names; on top: models/ needs no
Hydra and no pandas, only figures/ imports matplotlib, data/ never reaches models/ (not even through another
room), no command imports another command, and no module imports itself back through a cycle. Below the graph:
no function longer than a screen or with more than six positional parameters, matplotlib only in the figures home,
one writer of metrics.json, the README's map of the code matching the tree, and every test that starts a Python
subprocess marked out of the fast loop.
"""
import ast
import re
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


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg: Path = PKG) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> zeroshot modules it imports, module -> top-level external packages it imports)."""
    modules = {module_name(p, pkg.parent): p for p in pkg.rglob("*.py")}
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


# ------------------------------------------------------------------ functions that fit a screen

MAX_LINES, MAX_POSITIONAL = 60, 6


def long_functions(source: str, where: str = "<source>") -> list[str]:
    """Functions longer than MAX_LINES lines or with more than MAX_POSITIONAL positional parameters (self and cls
    not counted; keyword-only ones are free, they are named at every call)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            positional = [a.arg for a in node.args.posonlyargs + node.args.args]
            if positional[:1] in (["self"], ["cls"]):
                positional = positional[1:]
            if lines > MAX_LINES:
                found.append(f"{where}:{node.lineno} {node.name} is {lines} lines (at most {MAX_LINES})")
            if len(positional) > MAX_POSITIONAL:
                found.append(f"{where}:{node.lineno} {node.name} takes {len(positional)} positional parameters "
                             f"(at most {MAX_POSITIONAL}; make the rest keyword-only)")
    return found


def test_no_function_is_longer_than_a_screen_or_takes_too_many_positional_parameters():
    found = [v for p in sorted(PKG.rglob("*.py")) for v in long_functions(p.read_text(), str(p.relative_to(REPO)))]
    assert found == [], "\n".join(found)


def test_the_function_rule_catches_long_functions_and_many_positional_parameters():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES - 1))
    fits = f"def fits():\n{body}\n"
    assert long_functions(fits) == []
    assert "is 61 lines" in " ".join(long_functions(fits + "    return x0\n"))
    assert long_functions("class A:\n    def m(self, a, b, c, d, e, f, *, g=1, h=2): pass\n") == []
    assert "7 positional" in " ".join(long_functions("def f(a, b, c, d, e, f, g, *, h=1): pass\n"))
    assert "7 positional" in " ".join(long_functions("def f(a, /, b, c, d, e, f, g): pass\n"))


# ------------------------------------------------------------------ matplotlib only in the figures home

FIGURES = "figures"  # zeroshot/figures/: the one package that may import matplotlib (pyplot set-up, every plot)
PLOTTING = {"matplotlib", "mpl_toolkits"}


def matplotlib_outside_figures(outer: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {', '.join(sorted(ext & PLOTTING))}: figures are drawn only in zeroshot/{FIGURES}/"
            for m, ext in sorted(outer.items()) if ext & PLOTTING and room(m) != FIGURES]


def test_matplotlib_is_imported_only_in_the_figures_home():
    _, outer = import_graph()
    assert matplotlib_outside_figures(outer) == []


def test_the_matplotlib_rule_catches_an_import_outside_the_figures_home():
    assert matplotlib_outside_figures({f"zeroshot.{FIGURES}.run": {"matplotlib", "numpy"}, "zeroshot.metrics.x": {"numpy"}}) == []
    assert matplotlib_outside_figures({"zeroshot.metrics.calibration": {"matplotlib"}}) == [
        f"zeroshot.metrics.calibration imports matplotlib: figures are drawn only in zeroshot/{FIGURES}/"]
    _, outer = import_graph_of({"zeroshot/__init__.py": "", "zeroshot/report/__init__.py": "",
                                "zeroshot/report/draw.py": "def f():\n    import matplotlib.pyplot as plt\n"})
    assert matplotlib_outside_figures(outer) == [
        f"zeroshot.report.draw imports matplotlib: figures are drawn only in zeroshot/{FIGURES}/"]


def import_graph_of(files: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """import_graph of a package written to a temporary folder laid out like the repository."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(text)
        return import_graph(Path(tmp) / "zeroshot")


# ------------------------------------------------------------------ one writer of metrics.json

RECORD = "metrics.json"
# calls that write the file their argument (or the path they are called on) names
WRITES = {"write_json", "write_text", "write_bytes", "atomic_write", "dump", "rename", "copy", "copyfile", "copy2",
          "save", "to_json", "open", "os.replace"}  # os.replace, not str.replace


def record_writers(sources: dict[str, str]) -> list[str]:
    """Where the package writes metrics.json: each function (module:function) holding a write call whose argument
    or receiver names the file, directly ("metrics.json" in the expression), through a constant bound to it at
    module or class level (in any module; attributes too) or a local name bound to such an expression. Reads
    (read_text, rglob) do not count."""
    trees = {m: ast.parse(text) for m, text in sources.items()}
    constants = {getattr(t, "id", getattr(t, "attr", None)) for tree in trees.values() for node in ast.walk(tree)
                 if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant)
                 and node.value.value == RECORD for t in getattr(node, "targets", [getattr(node, "target", None)])}
    sites = set()
    for module, tree in trees.items():
        for name, nodes in _scopes(tree, "<module>"):
            names = set(constants)
            for node in nodes:
                if isinstance(node, ast.Assign) and _names_record(node.value, names):
                    names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            for node in nodes:
                if isinstance(node, ast.Call) and _call_name(node) in WRITES:
                    receiver = [node.func.value] if isinstance(node.func, ast.Attribute) else []
                    args = [*node.args, *(k.value for k in node.keywords), *receiver]
                    if any(_names_record(a, names) for a in args):
                        sites.add(f"{module}:{name}")
    return sorted(sites)


def _scopes(scope: ast.AST, name: str):
    """(name, nodes) of a scope and of each function inside it: a function's nodes are its own, not its inner ones'."""
    nodes, todo = [], list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _scopes(node, node.name)
        else:
            nodes.append(node)
            todo.extend(ast.iter_child_nodes(node))
    yield name, nodes


def _call_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return "os.replace" if f.attr == "replace" and getattr(f.value, "id", "") == "os" else f.attr
    return getattr(f, "id", "")


def _names_record(expr: ast.AST, names: set[str]) -> bool:
    return any((isinstance(n, ast.Constant) and n.value == RECORD) or (isinstance(n, ast.Name) and n.id in names)
               or (isinstance(n, ast.Attribute) and n.attr in names) for n in ast.walk(expr))


def test_one_place_writes_metrics_json():
    sources = {module_name(p): p.read_text() for p in sorted(PKG.rglob("*.py"))}
    writers = record_writers(sources)
    assert len(writers) == 1, f"metrics.json is written in {len(writers)} places (one run_directory writes it): {writers}"


def test_the_writer_rule_counts_every_way_of_writing_the_record():
    reads = 'def read(d):\n    return json.loads((d / "metrics.json").read_text()), list(d.rglob("metrics.json"))\n'
    assert record_writers({"zeroshot.report.runs": reads}) == []
    direct = 'def finish(run_dir, m):\n    write_json(run_dir / "metrics.json", m)\n'
    assert record_writers({"zeroshot.commands.a": direct, "zeroshot.report.runs": reads}) == ["zeroshot.commands.a:finish"]
    through_names = ('from zeroshot.record import RECORD_FILE\n'
                     'def finish(run, m):\n    path = run.dir / RECORD_FILE\n    path.write_text(json.dumps(m))\n')
    constant = 'RECORD_FILE = "metrics.json"\n'
    assert record_writers({"zeroshot.commands.a": direct, "zeroshot.commands.b": through_names,
                           "zeroshot.record": constant}) == ["zeroshot.commands.a:finish", "zeroshot.commands.b:finish"]
    opened = 'def f(d, m):\n    with open(os.path.join(d, "metrics.json"), "w") as fh:\n        json.dump(m, fh)\n'
    assert record_writers({"zeroshot.x": opened}) == ["zeroshot.x:f"]
    in_a_class = ('class RunDirectory:\n    RECORD = "metrics.json"\n    def close(self, m):\n'
                  '        tmp = self.dir / ".tmp"\n        tmp.write_text(m)\n        os.replace(tmp, self.dir / self.RECORD)\n'
                  '    def name(self):\n        return self.dir.name.replace("metrics.json", "")\n')
    assert record_writers({"zeroshot.record": in_a_class}) == ["zeroshot.record:close"]


# ------------------------------------------------------------------ the README's map of the code

LAYOUT_HEADING = "How the code is laid out"
OTHER_FOLDERS = {"configs", "docs", "tests", "benchmarks", "tools", "results", ".ci"}  # the repository's, not the package's


def section(markdown: str, heading: str) -> str | None:
    """The text under the heading (any level) up to the next heading of the same or a higher level."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        level = len(line) - len(line.lstrip("#"))
        if level and line[level:].strip().lower() == heading.lower():
            rest = [j for j in range(i + 1, len(lines)) if lines[j].startswith("#")
                    and len(lines[j]) - len(lines[j].lstrip("#")) <= level]
            return "\n".join(lines[i + 1:rest[0] if rest else len(lines)])
    return None


def layout_map_problems(text: str | None, pkg: Path = PKG) -> list[str]:
    """What a map of the code gets wrong: a module (x.py) or package (x/) it names that zeroshot/ does not have,
    and a subpackage of zeroshot/ it does not name."""
    if text is None:
        return [f"no '{LAYOUT_HEADING}' section"]
    files = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    packages = {p.parent.relative_to(pkg).as_posix() for p in pkg.rglob("__init__.py") if p.parent != pkg}
    named_packages, problems = set(), []
    for path, kind in re.findall(r"(?<![\w./-])((?:[A-Za-z_][\w]*/)*[A-Za-z_][\w]*)(/|\.py)(?![\w])", text):
        parts = path.split("/")
        if parts[0] == "zeroshot":
            parts = parts[1:]
        if not parts or parts[0] in OTHER_FOLDERS:
            continue
        rel = "/".join(parts)
        if kind == "/":
            found = {p for p in packages if p == rel or p.endswith("/" + rel)}
            named_packages |= found
            problems += [] if found else [f"names {rel}/, which is not a package in zeroshot/"]
        elif not any(f == rel + ".py" or f.endswith("/" + rel + ".py") for f in files):
            problems.append(f"names {rel}.py, which zeroshot/ does not have")
    problems += [f"does not name the subpackage {p}/" for p in sorted(packages - named_packages)]
    return problems


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_the_readme_and_the_architecture_page_map_the_code_as_it_is(page):
    problems = layout_map_problems(section((REPO / page).read_text(), LAYOUT_HEADING))
    assert problems == [], f"{page}'s '{LAYOUT_HEADING}': " + "; ".join(problems)


def test_the_map_rule_catches_a_stale_name_and_a_missing_package(tmp_path):
    pkg = tmp_path / "zeroshot"
    for rel in ("__init__.py", "log.py", "models/__init__.py", "models/clip.py", "figures/__init__.py", "figures/run.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    good = "# x\n## How the code is laid out\n```\nzeroshot/\n  log.py\n  models/  clip.py\n  figures/ run.py\n```\n" \
           "Rules: tests/test_layout.py; defaults in configs/.\n## Next\nplots.py\n"
    assert layout_map_problems(section(good, LAYOUT_HEADING), pkg) == []
    stale = good.replace("figures/ run.py", "plots.py drawing.py").replace("clip.py", "models/loader.py")
    assert layout_map_problems(section(stale, LAYOUT_HEADING), pkg) == [
        "names models/loader.py, which zeroshot/ does not have", "names plots.py, which zeroshot/ does not have",
        "names drawing.py, which zeroshot/ does not have", "does not name the subpackage figures/"]
    assert layout_map_problems(section("# x\n## Tests\n", LAYOUT_HEADING), pkg) == [f"no '{LAYOUT_HEADING}' section"]
    assert layout_map_problems(section(good.replace("  log.py", "  report/"), LAYOUT_HEADING), pkg) == [
        "names report/, which is not a package in zeroshot/"]


# ------------------------------------------------------------------ the fast loop stays fast: subprocess tests are marked

# a Python subprocess (zeroshot's CLI, a script); `mount` or a browser are not this mark's
SPAWNS = {"cli": re.compile(r"\bsys\.executable\b|\bcli\(|\bone_and_two_ranks\("),
          "dist": re.compile(r"torch\.distributed\.run|\branks=\d|\bone_and_two_ranks\(")}
EXEMPT = {"cli": {"browser", "wheel"}, "dist": set()}  # a browser or wheel test is out of the fast loop already


def unmarked_spawners(source: str, where: str = "<tests>") -> list[str]:
    """Tests that start a Python subprocess (or torchrun) without the mark that takes them out of the fast loop. A test's
    text is its own plus that of the module's functions, fixtures and constants it names, followed through."""
    tree = ast.parse(source)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    consts = {t.id: n for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    module_marks = _marks(consts["pytestmark"].value) if "pytestmark" in consts else set()
    lines = source.splitlines()
    pieces = {k: "\n".join(lines[n.lineno - 1:n.end_lineno]) for k, n in {**consts, **defs}.items()}
    words = {k: set(re.findall(r"\w+", v)) & pieces.keys() for k, v in pieces.items()}
    found = []
    for name, node in defs.items():
        if not name.startswith("test_"):
            continue
        text, seen, todo = "", {name}, [name]
        while todo:
            cur = todo.pop()
            text += pieces[cur] + "\n"
            todo += sorted(words[cur] - seen)
            seen |= words[cur]
        marks = module_marks | {m for d in node.decorator_list for m in _marks(d)}
        for mark, pattern in SPAWNS.items():
            if pattern.search(text) and not marks & ({mark} | EXEMPT[mark]):
                found.append(f"{where}::{name} starts a subprocess{' under torchrun' if mark == 'dist' else ''}: "
                             f"mark it @pytest.mark.{mark}")
    return found


def _marks(expr: ast.AST) -> set[str]:
    """The pytest marks an expression names (@pytest.mark.x, @pytest.mark.x(...), pytestmark = [..])."""
    return {n.attr for n in ast.walk(expr) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "mark"}


def test_every_test_that_starts_a_subprocess_is_marked():
    files = sorted(p for p in (REPO / "tests").glob("test_*.py") if p.name != "test_layout.py")  # names the words
    found = [v for p in files for v in unmarked_spawners(p.read_text(), p.name)]
    assert found == [], "\n".join(found)


def test_the_mark_rule_catches_an_unmarked_subprocess_test():
    helper = "def run(*a):\n    return subprocess.run([sys.executable, *a])\n"
    assert unmarked_spawners(helper + "def test_a():\n    assert run('x').returncode == 0\n") == [
        "<tests>::test_a starts a subprocess: mark it @pytest.mark.cli"]
    assert unmarked_spawners(helper + "@pytest.mark.cli\ndef test_a():\n    run('x')\n") == []
    assert unmarked_spawners("pytestmark = pytest.mark.cli\n" + helper + "def test_a():\n    run('x')\n") == []
    two = "@pytest.mark.cli\ndef test_b(tmp_path):\n    cli('eval', ranks=2)\n"
    assert unmarked_spawners(two) == ["<tests>::test_b starts a subprocess under torchrun: mark it @pytest.mark.dist"]
    assert unmarked_spawners("def test_c():\n    subprocess.run(['mount', 'x'])\n") == []
