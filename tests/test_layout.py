"""The package's architecture, checked: data flows one way, from the CLI down to the kernel.

Reads every module's imports with ``ast`` (nothing is imported): no import circle between the
package's modules, no module importing the package's ``__init__`` (the top), the CLI imported
by no library module, argparse only under ``kldiv_onnx/cli/``, no ``import_module`` of the
package's own modules, and every project import at module level except those of :data:`LAZY`.
The package's ``__init__`` names its modules in its ``_LAZY`` table (imported on first use):
those count as its imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kldiv_onnx

ROOT = Path(kldiv_onnx.__file__).resolve().parent
ENTRY_POINTS = {"kldiv_onnx.__main__"}
LAZY = {
    "kldiv_onnx.composite": "onnxscript, with onnx_ir and sympy: half a second to import, "
    "needed only where a function body is built",
    "kldiv_onnx.model_io": "onnx: the CLI's shared helpers read and write models through it, "
    "and `kldiv-onnx --version` and `--help` must not wait for it",
    **{
        f"kldiv_onnx.cli.{group}": "a subcommand group: imported with the library it runs only "
        "when one of its subcommands is given"
        for group in ("core", "interop", "runtimes", "cann", "bench", "compare")
    },
}
"""The project modules that may be imported inside a function, and why: each costs a start-up
that the importing module's other users should not pay."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every project import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    # module level: the body, and the type checkers' imports under `if TYPE_CHECKING:`
    typing_only = [
        n.body
        for n in tree.body
        if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"
    ]
    top = {id(n) for n in [*tree.body, *(n for body in typing_only for n in body)]}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "kldiv_onnx"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module or "").startswith("kldiv_onnx"):
                continue
            target = node.module if node.level == 0 else _resolve(module, node)
            # `from . import x` names a Python submodule when there is one, else the package
            # (a compiled module is imported by its full name: `import kldiv_onnx._core`)
            names = [
                f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                for a in node.names
            ]
        else:
            continue
        found += [(name, id(node) in top) for name in names if name in MODULES]
    return found


def _lazy_names(module: str) -> dict[str, str]:
    """The ``_LAZY`` table of ``module`` (public name → module under the package), {} if none."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                return ast.literal_eval(node.value)
    return {}


TOP_LAZY = {f"kldiv_onnx.{m}" for m in _lazy_names("kldiv_onnx").values()}
GRAPH = {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}
GRAPH["kldiv_onnx"] |= TOP_LAZY


def test_no_import_circle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in GRAPH[module]:
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module)


def test_no_module_imports_the_package_top():
    offenders = [m for m, targets in GRAPH.items() if "kldiv_onnx" in targets]
    assert offenders == []


def test_the_library_never_imports_the_cli():
    offenders = [
        m
        for m, targets in GRAPH.items()
        if not m.startswith("kldiv_onnx.cli")
        and m not in ENTRY_POINTS
        and any(t.startswith("kldiv_onnx.cli") for t in targets)
    ]
    assert offenders == []


def test_argparse_only_in_the_cli_and_no_import_module():
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if not module.startswith("kldiv_onnx.cli"):
            assert "import argparse" not in text, module
        assert "import_module(" not in text, module


def test_project_imports_at_module_level_but_the_lazy_ones():
    inside = [(m, t) for m in MODULES for t, top in _imports(m) if not top and t not in LAZY]
    assert inside == []
    assert set(MODULES) >= set(LAZY)


def test_only_the_package_top_imports_by_name():
    """``__import__`` only in the package's ``__init__``, and only of the modules its ``_LAZY``
    table names (counted as its imports above), each defining the names it is asked for."""
    for module, path in MODULES.items():
        if module != "kldiv_onnx":
            assert "__import__(" not in path.read_text(encoding="utf-8"), module
    assert TOP_LAZY and set(MODULES) >= TOP_LAZY
    for name in kldiv_onnx.__all__:
        assert getattr(kldiv_onnx, name) is not None, name
