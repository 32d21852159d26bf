"""The import rules of DESIGN.md ("Layout", "Layers", "Realtime is a leaf"), checked on the source.

Every Python file of the project's packages is parsed with ``ast`` (nothing is imported) and
**every** import is collected: module level, inside functions and methods (deferred imports are how
circles hide), under ``if TYPE_CHECKING:``, in ``try`` blocks. They make a file-level graph (module A
imports module B) on which:

- ``core`` imports no other package of the project (only itself, Django, third parties, stdlib);
- ``config`` holds only wiring: settings, test settings, URLs, the Celery app, WSGI/ASGI and the
  error handler;
- ``realtime`` is a leaf: it imports no domain app;
- no import cycle joins files of two packages;
- within a package the only cycle allowed is the enqueue pair: a ``services`` module imports its
  package's ``tasks`` to enqueue, and ``tasks`` imports ``services`` (``pkg/services.py`` and
  ``pkg/services/*.py`` alike; ditto ``tasks``).

How an import becomes an edge:

- ``import a.b.c`` → ``a.b.c`` (or the longest prefix of it that is a file of the project);
- ``from a.b import c`` → ``a.b.c`` when that is a module of the project (a submodule imported by
  name), else ``a.b``;
- relative imports are resolved against the importing file's package (``from . import x`` in
  ``pkg/services/jobs.py`` is ``pkg.services.x``; in ``pkg/__init__.py`` it is ``pkg.x``);
- importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``: those implicit parent
  edges are *not* added (a package re-exporting its submodules would otherwise be a cycle with each).

Out of scope: ``migrations/``, tests, ``bench/``; string references (``importlib.import_module``,
``apps.get_model``, Celery task names, dotted paths in settings) are not imports.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top-level packages of the repository that are not parts of the application.
NOT_APPLICATION = frozenset({"tests", "bench"})
# Directories and files inside a package that are not checked.
SKIPPED_DIRS = frozenset({"migrations", "tests", "bench", "__pycache__"})
SKIPPED_FILES = frozenset({"tests.py", "conftest.py"})

KERNEL = "core"
WIRING = "config"
LEAF = "realtime"
# config: settings, urls, the Celery app, WSGI/ASGI and gunicorn's settings, the error handler; nothing else.
WIRING_MODULES = frozenset(
    {"__init__", "settings", "test_settings", "urls", "celery", "wsgi", "asgi", "gunicorn", "exceptions"}
)
# The one intra-package cycle allowed: services enqueue their package's tasks, tasks call services.
ENQUEUE_PAIR = frozenset({"services", "tasks"})


# --- The graph ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` (module) imports ``target`` (module or external name)."""

    source: str
    target: str
    path: str  # the importing file, relative to the repository root
    line: int
    text: str  # the statement as written
    where: str = ""  # "" at module level, else e.g. "deferred, in Job.save" or "TYPE_CHECKING"

    @property
    def package(self) -> str:
        return self.source.partition(".")[0]

    @property
    def target_package(self) -> str:
        return self.target.partition(".")[0]

    def describe(self) -> str:
        where = f"  [{self.where}]" if self.where else ""
        return f"{self.path}:{self.line}: {self.text}{where}"


@dataclass
class Graph:
    root: Path
    packages: frozenset[str]
    files: dict[str, str] = field(default_factory=dict)  # module -> path relative to root
    imports: list[Import] = field(default_factory=list)  # every import, project and external

    def edges(self) -> dict[str, dict[str, list[Import]]]:
        """module -> imported project module -> the statements making that edge (no self edges)."""
        edges: dict[str, dict[str, list[Import]]] = {module: {} for module in self.files}
        for imp in self.imports:
            if imp.target in self.files and imp.target != imp.source:
                edges[imp.source].setdefault(imp.target, []).append(imp)
        return edges


def installed_local_apps(root: Path) -> set[str]:
    """Top-level packages of this repository named in ``config/settings.py`` INSTALLED_APPS."""
    tree = ast.parse((root / "config" / "settings.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AugAssign):  # INSTALLED_APPS += [...]
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "INSTALLED_APPS" for t in targets):
            for item in ast.walk(value):
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    names.add(item.value.partition(".")[0])
    return {name for name in names if (root / name / "__init__.py").is_file()}


def project_packages(root: Path) -> frozenset[str]:
    """``core``, ``config``, the local apps of INSTALLED_APPS, and any other top-level package of the
    repository (a package that is not a Django app, e.g. ``llm``, is checked as well)."""
    found = {
        path.parent.name
        for path in root.glob("*/__init__.py")
        if not path.parent.name.startswith(".") and path.parent.name not in NOT_APPLICATION
    }
    return frozenset(found | installed_local_apps(root) | {KERNEL, WIRING})


def python_files(root: Path, package: str) -> Iterator[Path]:
    for path in sorted((root / package).rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_DIRS.intersection(relative.parts[1:-1]) or path.name in SKIPPED_FILES:
            continue
        yield path


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """Every Import/ImportFrom of one file, with where it sits (function, TYPE_CHECKING)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.scopes: list[str] = []
        self.functions = 0
        self.type_checking = 0
        self.found: list[tuple[ast.stmt, list[str], str]] = []  # node, raw targets, where

    def _where(self) -> str:
        notes = []
        if self.functions:
            notes.append("deferred, in " + ".".join(self.scopes))
        if self.type_checking:
            notes.append("TYPE_CHECKING")
        return ", ".join(notes)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, function: bool) -> None:
        self.scopes.append(node.name)
        self.functions += function
        self.generic_visit(node)
        self.functions -= function
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node, True)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, False)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.visit(node.test)
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, [alias.name for alias in node.names], self._where()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".") if self.package else []
            up = node.level - 1
            if up > len(parts):
                raise AssertionError(f"{self.module}: relative import beyond the top-level package")
            base = ".".join(parts[: len(parts) - up] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # "from base import name": the submodule base.name when it is one, else base (decided later).
        targets = [base if alias.name == "*" else f"{base}\0{alias.name}" for alias in node.names]
        self.found.append((node, targets, self._where()))


def _resolve(name: str, modules: dict[str, str]) -> str:
    """The longest prefix of ``name`` that is a module of the project, else ``name`` itself."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def build_graph(root: Path, packages: Iterable[str] | None = None) -> Graph:
    packages = frozenset(packages) if packages is not None else project_packages(root)
    graph = Graph(root=root, packages=packages)
    sources: dict[str, tuple[Path, str]] = {}
    for package in sorted(packages):
        for path in python_files(root, package):
            relative = path.relative_to(root)
            module = module_name(relative)
            graph.files[module] = relative.as_posix()
            sources[module] = (path, path.read_text(encoding="utf-8"))
    for module, (path, source) in sources.items():
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(source, filename=str(path)))
        for node, targets, where in collector.found:
            text = " ".join((ast.get_source_segment(source, node) or "").split())
            resolved = []
            for raw in targets:
                base, _, name = raw.partition("\0")
                target = f"{base}.{name}" if name and f"{base}.{name}" in graph.files else _resolve(base, graph.files)
                if target not in resolved:  # from m import a, b, c: one edge to m
                    resolved.append(target)
            graph.imports.extend(Import(module, t, graph.files[module], node.lineno, text, where) for t in resolved)
    return graph


def strongly_connected(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), only those with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(edges: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (for the failure message)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(edges.get(node, ())):
            if succ not in members:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return component  # unreachable for a strongly connected component


def layer(module: str) -> str | None:
    """``services`` for ``pkg.services`` and ``pkg.services.*``, ``tasks`` likewise, else None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ENQUEUE_PAIR else None


def is_enqueue_pair(source: str, target: str) -> bool:
    """services → tasks or tasks → services, of the same package."""
    same_package = source.partition(".")[0] == target.partition(".")[0]
    return same_package and {layer(source), layer(target)} == ENQUEUE_PAIR


def intra_package_cycles(edges: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """The strongly connected components inside one package that are not only the enqueue pair: those
    with a file that is neither services nor tasks, and those that stay cyclic without the
    services <-> tasks edges (two services modules importing each other, say)."""
    inside = {s: [t for t in targets if t.partition(".")[0] == s.partition(".")[0]] for s, targets in edges.items()}
    without_pair = {s: [t for t in targets if not is_enqueue_pair(s, t)] for s, targets in inside.items()}
    remaining = [set(c) for c in strongly_connected(without_pair)]
    return [
        component
        for component in strongly_connected(inside)
        if any(layer(m) is None for m in component) or any(r <= set(component) for r in remaining)
    ]


def describe_cycles(components: list[list[str]], edges: dict[str, dict[str, list[Import]]], title: str) -> str:
    lines = [f"{len(components)} {title}:"]
    for component in components:
        members = set(component)
        packages = sorted({m.partition(".")[0] for m in component})
        cycle = shortest_cycle(edges, component)
        lines.append("")
        lines.append(f"* {len(component)} files of {', '.join(packages)}: " + " -> ".join(cycle))
        lines.append("  the imports inside it (cut enough of them to break every cycle):")
        described: dict[str, None] = {}  # one line a statement (``from pkg import a, b``: two edges)
        for source in component:
            for target, statements in sorted(edges[source].items()):
                if target in members:
                    note = "  (services <-> tasks: allowed)" if is_enqueue_pair(source, target) else ""
                    described.update(dict.fromkeys(f"    {imp.describe()}{note}" for imp in statements))
        lines.extend(described)
    return "\n".join(lines)


# --- The graph of this repository ---------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(ROOT)


def _forbidden_imports(graph: Graph, package: str, allowed: set[str]) -> list[Import]:
    local = graph.packages | NOT_APPLICATION
    return [
        imp
        for imp in graph.imports
        if imp.package == package and imp.target_package in local and imp.target_package not in allowed
    ]


def test_the_packages_of_the_project_are_all_checked(graph):
    assert {KERNEL, WIRING, LEAF, "accounts", "fiches"} <= graph.packages
    assert installed_local_apps(ROOT) <= graph.packages
    assert NOT_APPLICATION.isdisjoint(graph.packages)
    checked = {module.partition(".")[0] for module in graph.files}
    assert checked == graph.packages, f"packages without a checked file: {sorted(graph.packages - checked)}"
    assert not any("migrations" in path.split("/") for path in graph.files.values())


def test_core_imports_no_app(graph):
    bad = _forbidden_imports(graph, KERNEL, {KERNEL})
    assert not bad, "core imports no other package of the project (DESIGN.md, core/__init__.py):\n" + "\n".join(
        f"  {imp.describe()}" for imp in bad
    )


def test_config_holds_only_wiring():
    directory = ROOT / WIRING
    extra = sorted(
        path.name
        for path in directory.iterdir()
        if path.name != "__pycache__"
        and not path.name.startswith(".")
        and not (path.suffix == ".py" and path.stem in WIRING_MODULES)
    )
    assert not extra, (
        f"config holds only wiring ({', '.join(sorted(WIRING_MODULES))}); move these to core or to "
        f"their app: {', '.join(extra)}"
    )


def test_realtime_imports_no_domain_app(graph):
    bad = _forbidden_imports(graph, LEAF, {LEAF, KERNEL, WIRING})
    assert not bad, "realtime is a leaf and imports no domain app (DESIGN.md, 'Realtime is a leaf'):\n" + "\n".join(
        f"  {imp.describe()}" for imp in bad
    )


def test_no_import_cycle_between_files_of_two_packages(graph):
    edges = graph.edges()
    crossing = [c for c in strongly_connected(edges) if len({m.partition(".")[0] for m in c}) > 1]
    assert not crossing, describe_cycles(crossing, edges, "import cycle(s) between packages")


def test_within_a_package_only_services_and_tasks_import_each_other_in_a_cycle(graph):
    edges = graph.edges()
    bad = intra_package_cycles(edges)
    assert not bad, describe_cycles(bad, edges, "import cycle(s) inside a package other than services <-> tasks")


# --- The checker itself, on a small tree ---------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_sees_deferred_relative_and_submodule_imports(tmp_path):
    _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/models.py": "def save():\n    from app.selectors import changed\n",
            "app/selectors.py": "from .models import X\n",
            "app/services/__init__.py": "from . import jobs\n",
            "app/services/jobs.py": "from .. import tasks\nfrom ..services import other\n",
            "app/services/other.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import app.models\n",
            "app/tasks.py": "import os\nfrom app.services import jobs\n",
            "app/migrations/0001.py": "import other.models\n",
            "other/__init__.py": "",
            "other/models.py": "class M:\n    def f(self):\n        import app.api.views\n",
        },
    )
    graph = build_graph(tmp_path, {"app", "other"})
    assert "app.migrations.0001" not in graph.files
    found = {(imp.source, imp.target, imp.where) for imp in graph.imports}
    assert ("app.models", "app.selectors", "deferred, in save") in found
    assert ("app.selectors", "app.models", "") in found
    assert ("app.services", "app.services.jobs", "") in found
    assert ("app.services.jobs", "app.tasks", "") in found  # from .. import tasks: the submodule
    assert ("app.services.jobs", "app.services.other", "") in found
    assert ("app.services.other", "app.models", "TYPE_CHECKING") in found
    assert ("app.tasks", "os", "") in found
    assert ("other.models", "app", "deferred, in M.f") in found  # app.api.views is not a file: its package
    edges = graph.edges()
    assert strongly_connected(edges) == [["app.models", "app.selectors"], ["app.services.jobs", "app.tasks"]]
    assert is_enqueue_pair("app.services.jobs", "app.tasks") and is_enqueue_pair("app.tasks", "app.services")
    assert not is_enqueue_pair("app.services.jobs", "app.selectors")
    assert intra_package_cycles(edges) == [["app.models", "app.selectors"]]  # services <-> tasks is allowed
    message = describe_cycles([["app.models", "app.selectors"]], edges, "cycles")
    assert "app/models.py:2: from app.selectors import changed  [deferred, in save]" in message
    assert "app.models -> app.selectors -> app.models" in message


def test_strongly_connected_finds_every_component_of_a_deep_graph():
    chain = {f"m{i}": [f"m{i + 1}"] for i in range(3000)}
    chain["m3000"] = ["m0"]
    chain["a"] = ["b"]
    chain["b"] = ["a", "m5"]
    components = strongly_connected(chain)
    assert sorted(map(len, components)) == [2, 3001]
    assert ["a", "b"] in components


def test_only_the_services_tasks_pair_may_cycle_inside_a_package():
    def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
        return intra_package_cycles({source: dict.fromkeys(targets) for source, targets in edges.items()})

    pair = {"app.services.a": ["app.tasks"], "app.tasks": ["app.services.a", "app.services.b"], "app.services.b": []}
    assert cycles(pair) == []
    via_other = {"app.services": ["app.tasks"], "app.tasks": ["app.scheduler"], "app.scheduler": ["app.services"]}
    assert cycles(via_other) == [["app.scheduler", "app.services", "app.tasks"]]
    two = {"app.services.a": ["app.services.b", "app.tasks"], "app.services.b": ["app.services.a"], "app.tasks": []}
    assert cycles(two) == [["app.services.a", "app.services.b"]]
    other_package = {"app.services": ["other.tasks"], "other.tasks": ["app.services"]}
    assert cycles(other_package) == []  # a cycle between packages: the other test
