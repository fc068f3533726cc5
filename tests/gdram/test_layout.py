"""The package's layout: subpackages by role, every import running one way, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gdram
import pytest

PACKAGE = Path(gdram.__file__).parent
# A module may import its own subpackage and those of lower rank only (models and data know nothing of each other).
RANKS = {"files": 0, "data": 1, "models": 1, "training": 2, "analysis": 3, "cli": 4, "experiments": 5}


def _modules() -> dict[str, Path]:
    return {
        ".".join(["gdram", *path.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }


def _imports(path: Path) -> set[str]:
    """Every ``gdram`` module ``path`` imports, at any depth of the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gdram."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gdram."))
    return found


def _role(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_every_module_belongs_to_a_role():
    loose = [name for name in _modules() if name.count(".") == 1 and _role(name) is None]
    assert sorted(loose) == ["gdram.__main__"]


def test_imports_run_from_higher_roles_to_lower_ones_only():
    wrong = []
    for module, path in _modules().items():
        role = _role(module)
        if role is None:  # gdram/__init__ (lazy public names) and __main__
            continue
        for imported in _imports(path):
            target = _role(imported)
            if target != role and (target is None or RANKS[target] >= RANKS[role]):
                wrong.append(f"{module} -> {imported}")
    assert wrong == []


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {imported for imported in _imports(path) if imported in modules} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(following) :], following]))
            if following not in state:
                visit(following, [*trail, following])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("module", ["gdram", "gdram.cli", "gdram.cli.console"])
def test_the_command_line_starts_without_importing_torch(module: str):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
