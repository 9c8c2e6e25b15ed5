"""The documents hold to the code: the command-line and settings references are what docs/reference.py
writes from the parsers and `Settings`, and the README's request gets an answer of the shape it shows."""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def reference() -> ModuleType:
    """docs/reference.py, the generator of the references (a script, not a package's module)."""
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["cli.md", "settings.md"])
def test_the_reference_is_what_the_code_says(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "37")  # the text must not depend on the terminal, nor on the CLV_* variables
    monkeypatch.setenv("CLV_DATA_DIR", "/somewhere/else")
    generator = reference()
    path = ROOT / "docs" / name
    expected = next(text() for p, text in generator.GENERATED.items() if p == path)
    committed = path.read_text() if path.exists() else ""
    diff = "".join(
        difflib.unified_diff(committed.splitlines(True), expected.splitlines(True), f"docs/{name}", "generated", n=1)
    )
    assert committed == expected, f"docs/{name} is out of date: run `make docs` and commit it\n{diff[:3000]}"


# ---- the README's request and its answer ------------------------------------------------------------


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the README's ```language blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def readme_request() -> tuple[str, dict, dict]:
    """(path, request body, answer) of the README: its curl to POST /predict/clv and the JSON block after it."""
    text = README.read_text()
    shells = [block for block in fenced(text, "sh") if "curl" in block and "/predict/clv" in block]
    assert shells, "README.md: no ```sh block with a curl to /predict/clv"
    words = shlex.split(shells[0].replace("\\\n", " "))
    url = next(w for w in words if w.startswith("http"))
    body = json.loads(words[words.index("-d") + 1])
    after = text[text.index(shells[0]) + len(shells[0]) :]
    answers = fenced(after, "json")
    assert answers, "README.md: no ```json block (the answer) after the curl"
    return "/" + url.split("/", 3)[3], body, json.loads(answers[0])


def shape_differences(shown: object, real: object, where: str = "answer") -> list[str]:
    """Where the README's JSON differs from the real one in keys or types (values are the bank's own)."""
    if type(shown) is not type(real):
        return [f"{where}: README has {type(shown).__name__}, the service answers {type(real).__name__}"]
    if isinstance(shown, dict):
        found = []
        if missing := sorted(real.keys() - shown.keys()):
            found.append(f"{where}: README lacks {missing}")
        if extra := sorted(shown.keys() - real.keys()):
            found.append(f"{where}: README has {extra}, which the service does not answer")
        for key in sorted(shown.keys() & real.keys()):
            found += shape_differences(shown[key], real[key], f"{where}.{key}")
        return found
    if isinstance(shown, list):
        if not shown or not real:
            return [] if not shown and not real else [f"{where}: one list is empty, the other not"]
        return shape_differences(shown[0], real[0], f"{where}[0]")
    return []


def test_the_readme_answer_has_the_shape_of_the_real_one(client: TestClient) -> None:
    path, body, shown = readme_request()
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    differences = shape_differences(shown, response.json())
    assert not differences, "README.md's answer is stale; paste a fresh one from `make run`:\n" + "\n".join(differences)


def test_the_shape_check_sees_a_missing_key_and_a_changed_type() -> None:
    real = {"a": 1, "b": [{"x": 1.0, "y": None}], "c": {"d": "e"}}
    assert shape_differences(real, real) == []
    assert shape_differences({"b": [{"x": 1.0, "y": None}], "c": {"d": "e"}}, real) == ["answer: README lacks ['a']"]
    assert shape_differences({"a": 1, "b": [{"x": 1}], "c": {"d": "e"}}, real) == [
        "answer.b[0]: README lacks ['y']",
        "answer.b[0].x: README has int, the service answers float",
    ]


# ---- the README's other promises ---------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """A `## heading` section of a Markdown text, to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def test_the_readme_maps_every_doc_and_links_only_inside_the_repository() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    outside = [t for t in targets if re.match(r"[a-z]+:", t)]
    assert not outside, f"README.md links outside the repository: {outside}"
    for target in targets:
        assert (ROOT / target.split("#")[0]).exists(), f"README.md links to {target}, which does not exist"
    urls = {u.rstrip(".,)") for u in re.findall(r"https?://[^\s`'\"]+", text)}
    assert {u for u in urls if not u.startswith("http://127.0.0.1:")} == set(), "README.md names outside URLs"
    docs = section(text, "Documentation")
    files = sorted(p.name for p in (ROOT / "docs").iterdir() if p.is_file())
    unmapped = [name for name in files if f"(docs/{name})" not in docs]
    assert not unmapped, f"README.md's map of docs/ leaves out {unmapped}"


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))])
def test_every_link_between_the_documents_reaches_its_file_and_heading(page: str) -> None:
    path = ROOT / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # the README's own test refuses these there
        file, _, heading = target.partition("#")
        dest = (path.parent / file) if file else path
        if not dest.exists() or (heading and dest.suffix == ".md" and heading not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{page}: links that lead nowhere: {broken}"


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\[=<>~! ]", line)[0])
    return names


def test_the_readme_says_why_each_dependency_is_here() -> None:
    why = section(README.read_text(), "Dependencies").lower()
    pinned = requirement_names(ROOT / "requirements.txt") + requirement_names(ROOT / "requirements-dev.txt")
    if (ROOT / "package.json").exists():  # the page's tools from npm: "@biomejs/biome" is Biome
        tools = json.loads((ROOT / "package.json").read_text())
        pinned += [name.split("/")[-1] for kind in ("dependencies", "devDependencies") for name in tools.get(kind, {})]
    unexplained = [name for name in pinned if name.lower() not in why]
    assert not unexplained, f"README.md's Dependencies section does not say why these are here: {unexplained}"


def figures_table(text: str) -> list[str]:
    """The rows of the first Markdown table in the text."""
    rows = re.search(r"^(\|.*\|\n)+", text, flags=re.MULTILINE)
    assert rows, "no table"
    return rows.group(0).splitlines()


def test_the_readme_figures_are_the_current_table_of_the_benchmarks() -> None:
    readme = figures_table(section(README.read_text(), "Current figures"))
    current = figures_table((ROOT / "docs" / "benchmarks.md").read_text())
    assert readme == current, "README.md's figures differ from the current table atop docs/benchmarks.md"
