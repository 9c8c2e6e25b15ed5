"""The house's rules, read from the source: each stage of clv imports only the stages below it, and no module
imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "clv"
# lower number, lower stage; synthetic and model stand side by side and know nothing of each other
STAGES = {"common": 0, "data": 1, "synthetic": 2, "model": 2, "batch": 3, "service": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every clv module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clv":
            # `from clv.model import conformal` imports a module; `from clv.model.card import X`, a name
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "clv"}
    return found


GRAPH = {name: imports(path) & MODULES.keys() for name, path in MODULES.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if stage(m)))
def test_a_stage_imports_only_the_stages_below_it(module: str) -> None:
    mine = stage(module)
    upward = [m for m in GRAPH[module] if stage(m) and stage(m) != mine and STAGES[stage(m)] >= STAGES[mine]]
    assert not upward, f"{module} imports {upward}, a stage at or above {mine}"
    assert not [m for m in GRAPH[module] if stage(m) is None and m != "clv"], f"{module} imports the programs' layer"


def test_no_module_imports_itself_back() -> None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(GRAPH[module]):
            assert state.get(other) != "open", f"a circle: {' -> '.join([*path, module, other])}"
            if other not in state:
                visit(other, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_every_stage_says_what_it_holds() -> None:
    for name in STAGES:
        doc = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text()))
        assert doc and len(doc.split()) > 15, f"clv/{name}/__init__.py has no paragraph saying what it holds"
