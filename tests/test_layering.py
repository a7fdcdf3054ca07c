"""The architecture as contracts on the code's imports (read statically, as import-linter would).

- probes read the machine and import nothing of the application;
- the headless parts (monitoring core, planner, launcher, exporter, text commands) never import
  Textual, the dashboard or the widgets;
- module-level imports form no cycle anywhere in the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"numatop_llm": REPO / "app", "numatop_llm.probes": REPO / "probes", "numatop_llm.widgets": REPO / "widgets"}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg, root in ROOTS.items():
        for f in root.rglob("*.py"):
            rel = f.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


MODULES = modules()


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules imported by a file; with ``top_level_only``, not those inside functions or TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            elif not top_level_only or isinstance(node, (ast.If, ast.Try, ast.With)):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])
                    elif not top_level_only:
                        visit([n for n in ast.walk(child) if isinstance(n, (ast.Import, ast.ImportFrom))])

    visit(tree.body)
    return found


def test_every_module_is_found() -> None:
    assert "numatop_llm.monitor.session" in MODULES and "numatop_llm.probes.models" in MODULES
    assert len(MODULES) > 60


def test_probes_import_nothing_of_the_application() -> None:
    for name, path in MODULES.items():
        if not name.startswith("numatop_llm.probes"):
            continue
        bad = {m for m in imports(path, top_level_only=False) if m.startswith("numatop_llm.")}
        bad = {m for m in bad if not m.startswith("numatop_llm.probes")}
        assert not bad and not any(m.startswith("textual") for m in imports(path, top_level_only=False)), (name, bad)


HEADLESS = (
    "numatop_llm.monitor",
    "numatop_llm.planner",
    "numatop_llm.launcher",
    "numatop_llm.exporter",
    "numatop_llm.units",
    "numatop_llm.postmortem",
    "numatop_llm.statedir",
    "numatop_llm.report",
    "numatop_llm.recording",
    "numatop_llm.demo",
)


def test_headless_parts_never_import_the_ui() -> None:
    for name, path in MODULES.items():
        if not name.startswith(HEADLESS):
            continue
        ui = {
            m
            for m in imports(path, top_level_only=False)
            if m.startswith(("textual", "numatop_llm.dashboard", "numatop_llm.widgets"))
        }
        assert not ui, (name, ui)


def test_module_level_imports_have_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for m in imports(path, top_level_only=True):
            # "from pkg import name" names a module when pkg.name is one
            while m and m not in MODULES:
                m = m.rpartition(".")[0]
            if m and m != name and not name.startswith(m + "."):  # a package's own __init__ is not a cycle
                deps.add(m)
        graph[name] = deps
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == [], cycles
