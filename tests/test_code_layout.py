"""The shape of the code: every module imports, the package's module-level imports form no cycle, no file
is over 700 lines, and the Python blocks of README.md run."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each installed package's files are (pyproject.toml maps widgets/ and apps/ under agreid_kit)
PACKAGE_DIRS = {"agreid_kit": ROOT / "agreid_kit", "agreid_kit.widgets": ROOT / "widgets",
                "agreid_kit.apps": ROOT / "apps"}
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    """Module name -> file of every module of the package (widgets and apps included)."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "agreid_kit" and parts and parts[0] in ("widgets", "apps"):
                continue
            out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when it is imported (module level, outside TYPE_CHECKING).

    ``import a.b.c`` / ``from a.b import c`` read a.b.c (or a.b's namespace) and run the packages a and
    a.b first; those packages count as imports too, except the ones ``name`` itself lives in (they are
    being imported already when ``name`` runs: no cycle through them)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = {f"{mod}.{a.name}" for a in node.names} & known  # `from pkg import submodule`
                targets.update(subs or {mod})
                if len(subs) < len(node.names):
                    targets.add(mod)  # names read from mod's own namespace
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + (not is_package))}
    own.discard(name)
    deps = set()
    for mod in targets:
        parts = mod.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
        deps.update(m for m in ancestors - own if m in known)
        if mod in known:
            deps.add(mod)
    deps.discard(name)
    return deps


def test_every_module_imports():
    failed = {}
    for name in _modules():
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - collect every failure
            failed[name] = f"{type(e).__name__}: {e}"
    assert not failed, failed


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _top_level_imports(name, path, set(modules)) for name, path in modules.items()}
    assert "agreid_kit.run" in graph["agreid_kit.engine.train"]  # the parser sees the imports
    cycles, state, stack = [], {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_file_of_the_package_is_over_700_lines():
    files = list((ROOT / "agreid_kit").rglob("*.py")) + list((ROOT / "widgets").rglob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in _modules().values() if f"`{p.relative_to(ROOT)}`" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "agreid_kit" in b]


def test_readme_has_python_blocks():
    assert _readme_blocks(), "README.md has no ```python block importing agreid_kit"


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_block_runs(index):
    """Each README block that imports the kit: its import lines run (whole blocks too when they only import)."""
    block = _readme_blocks()[index]
    tree = ast.parse(block)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports, block
    code = ast.unparse(ast.Module(body=imports, type_ignores=[]))
    exec(compile(code, f"README.md block {index}", "exec"), {})
    if len(imports) == len(tree.body):
        exec(compile(block, f"README.md block {index}", "exec"), {})
