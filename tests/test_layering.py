"""The package's folders show the flow: no import circle, and every import points down the stages.

The import graph is built from the source (ast), counting every import: at module level, inside a
function (lazy) and under ``if TYPE_CHECKING`` (type-only), plus the module names handed to
nlbench's lazy re-exports (``lazy_attributes``, ``deprecated_module``) and to
``importlib.import_module``. The stages, lowest first::

    root (plugin API, leaf utilities) < lib < data < spec < train < sweep | report < cli

An arrow may point to its own stage or a lower one; ``sweep`` and ``report`` are siblings and do
not import each other. The few deliberate exceptions are listed in :data:`EXCEPTIONS` with why.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nlbench"

#: Rank of each stage; the root modules (``nlbench/*.py``) are stage "root".
STAGES = {"root": 0, "lib": 1, "data": 2, "spec": 3, "train": 4, "sweep": 5, "report": 5, "tune": 5, "cli": 6}

#: (importing module, imported module): the arrows that point up on purpose, and why.
EXCEPTIONS = {
    # nlbench.testing.check_method trains a plugin through the real engine: it is the one root
    # module that runs a whole run, for plugin authors' own tests.
    ("nlbench.testing", "nlbench.train.assemble"): "check_method assembles a real run",
    ("nlbench.testing", "nlbench.train.engine"): "check_method trains through the real engine",
    ("nlbench.testing", "nlbench.train.evaluate"): "check_method compares the checkpoint's predictions",
    ("nlbench.testing", "nlbench.spec.resolve"): "check_method resolves its tiny run like `nlbench run`",
    ("nlbench.testing", "nlbench.spec.runspec"): "check_method builds its run spec",
    ("nlbench.testing", "nlbench.spec.config"): "check_method reads no benchmark.toml: an empty Config",
    ("nlbench.testing", "nlbench.data.augment"): "check_method predicts through the run's augmenter",
    ("nlbench.testing", "nlbench.train.epoch"): "check_method steps once more from the run's image cache",
    # The store names a run's folder after its spec (type-only: it reads the spec's fields).
    ("nlbench.store", "nlbench.spec.runspec"): "run_dir_name(spec) annotation",
    # Old import paths, kept for one release (module __getattr__ with a DeprecationWarning).
    ("nlbench.executors", "nlbench.sweep.slurm"): "nlbench.executors.TrainTask: queued SLURM jobs unpickle it",
    ("nlbench.executors", "nlbench.sweep.local"): "old path of LocalExecutor, one release",
    ("nlbench.executors", "nlbench.sweep.worker"): "old path of train_one, one release",
    ("nlbench.selection", "nlbench.lib.selection"): "deprecated path, one release",
    ("nlbench.losses", "nlbench.lib.losses"): "deprecated path, one release",
    ("nlbench.schedules", "nlbench.lib.schedules"): "deprecated path, one release",
    ("nlbench.synthface", "nlbench.lib.synthface"): "deprecated path, one release",
    ("nlbench.augment", "nlbench.data.augment"): "deprecated path, one release",
}

LAZY_CALLS = {"lazy_attributes", "deprecated_module", "import_module"}


@dataclass(frozen=True)
class Arrow:
    """One import: who imports what, how (module, lazy, type) and on which line."""

    source: str
    target: str
    kind: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def module_name(path: Path, base: Path, prefix: str) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([prefix, *parts]) if prefix else ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.Module) -> list[tuple[str, list[str], str, int, int]]:
    """Every import of a module: (module, imported names, kind, level, line)."""
    found: list[tuple[str, list[str], str, int, int]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and kind == "module":
                child_kind = "lazy"
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    visit_one(sub, "type")
                for sub in child.orelse:
                    visit_one(sub, kind)
                continue
            visit_one(child, child_kind)

    def visit_one(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], kind, 0, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [a.name for a in node.names], kind, node.level, node.lineno))
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in LAZY_CALLS:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.startswith("nlbench."):
                        found.append((sub.value, [], "lazy" if kind == "module" else kind, 0, node.lineno))
        visit(node, kind if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else "lazy")

    visit(tree, "module")
    return found


def graph(base: Path, prefix: str, local_names: bool = False) -> tuple[set[str], list[Arrow]]:
    """The modules under ``base`` and the arrows between them.

    ``prefix``: the package name of ``base`` ("nlbench"), or "" for a folder of scripts whose
    modules import each other by bare name (``local_names``), as benchmarks/throughput does.
    """
    files = {module_name(p, base, prefix): p for p in sorted(base.rglob("*.py"))}
    arrows: list[Arrow] = []
    for name, path in files.items():
        for module, names, kind, level, line in imports(ast.parse(path.read_text(), str(path))):
            if level:  # relative import
                package = name.split(".")[: -level if path.name != "__init__.py" else len(name.split(".")) - level + 1]
                module = ".".join([*package, module] if module else package)
            if local_names:
                if module in files and files[module].parent == path.parent:
                    arrows.append(Arrow(name, module, kind, line))
                continue
            for target in {f"{module}.{n}" if f"{module}.{n}" in files else module for n in names} or {module}:
                if target in files and target != name:
                    arrows.append(Arrow(name, target, kind, line))
    return set(files), arrows


def circles(nodes: set[str], arrows: list[Arrow]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), listed exceptions left out.

    The old import paths kept for one release (``nlbench.executors.TrainTask`` forwards to the sweep
    stage, which imports the executor contract) are the only arrows an exception takes out.
    """
    edges: dict[str, set[str]] = {n: set() for n in nodes}
    for arrow in arrows:
        if (arrow.source, arrow.target) in EXCEPTIONS:
            continue
        edges[arrow.source].add(arrow.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            strong(node)
    return found


def stage(module: str) -> str:
    if module == "nlbench.__main__":  # ``python -m nlbench`` is the command line
        return "cli"
    parts = module.split(".")
    if len(parts) >= 3 or (len(parts) == 2 and parts[1] in STAGES):
        return parts[1] if parts[1] in STAGES else "root"
    return "root"


def upward(arrows: list[Arrow]) -> list[Arrow]:
    """Arrows that point to a higher stage, or across between the sibling stages sweep, report and tune."""
    bad = []
    for arrow in arrows:
        if (arrow.source, arrow.target) in EXCEPTIONS:
            continue
        source, target = stage(arrow.source), stage(arrow.target)
        if STAGES[target] > STAGES[source] or (STAGES[target] == STAGES[source] and source != target and source != "root"):
            bad.append(arrow)
    return bad


NLBENCH = graph(PACKAGE, "nlbench")


def test_nlbench_has_no_import_circle_counting_lazy_and_type_only_imports() -> None:
    nodes, arrows = NLBENCH
    found = circles(nodes, arrows)
    detail = "\n".join(str(a) for a in arrows if any(a.source in c and a.target in c for c in found))
    assert not found, f"import circles: {found}\n{detail}"


def test_every_import_points_down_the_flow() -> None:
    bad = upward(NLBENCH[1])
    assert not bad, "imports against the flow (cli > report | sweep > train > spec > data > lib > root):\n" + \
        "\n".join(map(str, bad))


def test_every_listed_exception_is_still_needed() -> None:
    present = {(a.source, a.target) for a in NLBENCH[1]}
    assert not set(EXCEPTIONS) - present, f"exceptions no import needs any more: {sorted(set(EXCEPTIONS) - present)}"


@pytest.mark.parametrize("folder", sorted({p.parent for p in (ROOT / "benchmarks").rglob("*.py")}), ids=str)
def test_benchmarks_have_no_import_circle(folder: Path) -> None:
    nodes, arrows = graph(folder, "", local_names=True)
    nodes = {n for n in nodes if "." not in n}  # this folder's own scripts
    arrows = [a for a in arrows if a.source in nodes and a.target in nodes]
    assert not circles(nodes, arrows), circles(nodes, arrows)


def test_the_checker_sees_lazy_and_type_only_arrows(tmp_path: Path) -> None:
    """The checker itself: a lazy circle and a type-only upward arrow are both caught."""
    package = tmp_path / "nlbench"
    (package / "train").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train" / "__init__.py").write_text("")
    (package / "store.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nlbench.train.engine import Engine\n")
    (package / "train" / "engine.py").write_text("def f():\n    from nlbench import store\n")
    nodes, arrows = graph(package, "nlbench")
    assert {(a.source, a.target, a.kind) for a in arrows} == {
        ("nlbench.store", "nlbench.train.engine", "type"), ("nlbench.train.engine", "nlbench.store", "lazy")}
    assert circles(nodes, arrows) == [["nlbench.store", "nlbench.train.engine"]]
    assert [a.source for a in upward(arrows)] == ["nlbench.store"]
