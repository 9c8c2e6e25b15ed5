"""The house's rules, read from the source: each stage of clv imports only the stages below it, and no module
imports itself back through others; the page's ES modules (static/*.js) likewise: no circle, and views that import
only helpers, wired together by page.js alone."""

from __future__ import annotations

import ast
import re
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


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of `graph` (module -> the modules it imports), as the path around it; None when there is
    none. A depth-first walk: reaching a module whose walk is still open closes a circle."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                return [*path, module, other]
            if other not in state and (found := visit(other, [*path, module])):
                return found
        state[module] = "done"
        return None

    return next((found for module in sorted(graph) if module not in state and (found := visit(module, []))), None)


def test_no_module_imports_itself_back() -> None:
    found = circle(GRAPH)
    assert found is None, f"a circle: {' -> '.join(found)}"


def test_every_stage_says_what_it_holds() -> None:
    for name in STAGES:
        doc = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text()))
        assert doc and len(doc.split()) > 15, f"clv/{name}/__init__.py has no paragraph saying what it holds"


# ---- the page's ES modules (static/*.js) -------------------------------------------------------------------------
STATIC = ROOT.parent / "static"
PAGE_ENTRY = "page.js"  # the only module index.html loads, and the only one that wires views together
# modules that draw no part of the page and know no view; every other module but the entry is a view
PAGE_HELPERS = {"api.js", "chart.js", "contract.js", "examples.js", "fields.js", "format.js", "state.js"}

# `import ... from "x"` and `export ... from "x"` (between them only names, braces, commas, `*` and `as`; a static
# import stands at a module's top level, so at the start of a line), `import "x"`, and `import(...)` anywhere
_FROM = re.compile(r"""^[ \t]*(?:import|export)\b[\w\s{},*$]*?\bfrom\s*(["'])(?P<spec>[^"'\n]+)\1""", re.MULTILINE)
_BARE = re.compile(r"""^[ \t]*import\s*(["'])(?P<spec>[^"'\n]+)\1""", re.MULTILINE)
_DYNAMIC = re.compile(r"""\bimport\s*\(\s*(?P<arg>[^)]*?)\s*\)""")


def js_imports(text: str) -> set[str]:
    """The specifiers a module imports. A dynamic import of a computed name comes back as its expression
    (`import(name)` as "name"), which names no file, so that the graph cannot miss it."""
    found = {m["spec"] for pattern in (_FROM, _BARE) for m in pattern.finditer(text)}
    for m in _DYNAMIC.finditer(text):
        literal = re.fullmatch(r"""(["'`])([^"'`$]+)\1""", m["arg"])
        found.add(literal[2] if literal else m["arg"])
    return found


def js_graph() -> dict[str, set[str]]:
    """Each module of static/ (its path there) and the modules it imports; every specifier names a file of static/,
    as "./x.js" or "/static/x.js" (the page loads no library)."""
    modules = {path.relative_to(STATIC).as_posix(): path for path in STATIC.rglob("*.js")}
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for spec in js_imports(path.read_text()):
            if spec.startswith("/static/"):
                target = STATIC / spec.removeprefix("/static/")
            elif spec.startswith(("./", "../")):
                target = path.parent / spec
            else:
                target = None
            resolved = target.resolve().relative_to(STATIC.resolve()).as_posix() if target else None
            assert resolved in modules, f"static/{name} imports {spec!r}, which is no module of static/"
            graph[name].add(resolved)
    return graph


def test_the_import_reader_sees_every_form_of_import() -> None:
    text = """import { a,
      b as c } from "./one.js";
    import * as all from './two.js';
    import "./three.js";
    export { d } from "./four.js";
    export * from "/static/five.js";
    const later = () => import("./six.js");
    const chosen = import(`./${name}.js`);
    const words = "an import from nowhere"; // import x from "./not-at-line-start.js" is a comment
    export const e = { from: "./no.js" };
    """
    assert js_imports(text) == {
        "./one.js",
        "./two.js",
        "./three.js",
        "./four.js",
        "/static/five.js",
        "./six.js",
        "`./${name}.js`",
    }


def test_no_page_module_imports_itself_back() -> None:
    found = circle(js_graph())
    assert found is None, f"a circle in static/: {' -> '.join(found)}"


def test_the_circle_search_finds_one() -> None:
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_page_views_import_only_helpers_and_page_js_wires_them() -> None:
    graph = js_graph()
    assert PAGE_HELPERS | {PAGE_ENTRY} <= graph.keys(), "a helper or the entry named here is not in static/"
    views = graph.keys() - PAGE_HELPERS - {PAGE_ENTRY}
    for module, imported in sorted(graph.items()):
        if module == PAGE_ENTRY:
            continue
        kind = "a view" if module in views else "a helper"
        assert PAGE_ENTRY not in imported, f"static/{module} imports {PAGE_ENTRY}: pass it a callback instead"
        assert imported <= PAGE_HELPERS, f"static/{module}, {kind}, imports {sorted(imported - PAGE_HELPERS)}"
    assert views <= graph[PAGE_ENTRY], f"{PAGE_ENTRY} does not wire {sorted(views - graph[PAGE_ENTRY])}"
    reached, todo = set(), [PAGE_ENTRY]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert reached == graph.keys(), f"no import leads from {PAGE_ENTRY} to {sorted(graph.keys() - reached)}"
    scripts = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", (ROOT.parent / "index.html").read_text())
    assert scripts == [f"/static/{PAGE_ENTRY}"], f"index.html loads {scripts}; the page's one entry is {PAGE_ENTRY}"
