"""The package's layering, checked on every run.

- Every module imports on its own in a fresh interpreter (as aiohttp's
  https://github.com/aio-libs/aiohttp/blob/master/tests/test_circular_imports.py does): an
  import that only works after another module was imported first is a hidden cycle.
- No import cycle at all between modules, counting imports under `TYPE_CHECKING` and inside
  functions: a cycle hidden behind either is still two modules that cannot be read apart.
- Everything is imported under the one installed name, `callbridge.`: a bare `services.x`
  would load a second copy of the module beside `callbridge.services.x`.
- `shared` imports no service and no simulator; no runtime service (ingress, orchestrator,
  gateway) imports another service or the simulators; the simulators import no service
  (they are witnesses of the published protocols, not of our code).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "callbridge"
RUNTIME_SERVICES = ("webhook_ingress", "call_orchestrator", "media_gateway")
FOLDERS = ("services", "shared", "simulators")  # installed as callbridge.<folder>
PARTS = tuple(f"{PACKAGE}.{folder}" for folder in FOLDERS)


def _modules() -> dict[str, Path]:
    """Module name -> file, for the installed package and bench."""
    found: dict[str, Path] = {PACKAGE: ROOT / PACKAGE / "__init__.py"}
    bases = [*((f"{PACKAGE}.{folder}", ROOT / folder) for folder in FOLDERS),
             ("bench", ROOT / "bench")]
    for top, base in bases:
        for path in sorted(base.rglob("*.py")):
            parts = [*top.split("."), *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module `module` imports (any depth: TYPE_CHECKING, functions), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.append((sub if sub in MODULES else base, node.lineno))
    return names


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps = set()
        for name, _ in _imports(module, path):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            # a package's own submodules are not a dependency of the package on itself
            if name and name != module and not module.startswith(name + "."):
                deps.add(name)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below could fail: a planted three-module circle is reported."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def _part(module: str) -> str:
    """The layer a module belongs to: `callbridge.services.media_gateway.x` ->
    `services.media_gateway`; `callbridge.shared.pcm` -> `shared`; `bench.faults` -> `bench`."""
    parts = module.removeprefix(PACKAGE + ".").split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 1 else parts[0]


def _violations(rule: str, allowed: Callable[[str, str], bool]) -> list[str]:
    bad = []
    for module, path in MODULES.items():
        mine = _part(module)
        for name, line in _imports(module, path):
            theirs = _part(name) if name.startswith(PARTS) else None
            if theirs is not None and theirs != mine and not allowed(mine, theirs):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {name}")
    return [f"{rule}: {b}" for b in bad]


def _layer_allows(mine: str, theirs: str) -> bool:
    if mine == "shared":
        return False  # shared is the bottom: pure protocol code, settings, keys
    if mine == "simulators":
        return theirs == "shared"
    if mine.removeprefix("services.") in RUNTIME_SERVICES:
        return theirs == "shared"
    return True  # tools (cli, ops, demo, stack) and bench may use anything


def test_layers_import_only_downwards() -> None:
    assert _violations("layering", _layer_allows) == []


def test_the_layer_rule_refuses_an_upward_import() -> None:
    assert _part("callbridge.services.media_gateway.relay") == "services.media_gateway"
    assert not _layer_allows("shared", "services.media_gateway")
    assert not _layer_allows("services.webhook_ingress", "services.call_orchestrator")
    assert not _layer_allows("services.media_gateway", "simulators")
    assert not _layer_allows("simulators", "services.media_gateway")
    assert _layer_allows("services.ops", "services.media_gateway")


def _bare_imports() -> list[str]:
    """Imports of `services`, `shared` or `simulators` without the `callbridge.` prefix, in
    the package, bench and the tests."""
    bad = []
    files = [*MODULES.items(), *((f"tests.{p.stem}", p) for p in (ROOT / "tests").rglob("*.py"))]
    for module, path in files:
        for name, line in _imports(module, path):
            if name.split(".")[0] in FOLDERS:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_everything_is_imported_under_the_one_package_name() -> None:
    assert _bare_imports() == []


def test_the_package_links_to_the_folders_the_design_fixes() -> None:
    """callbridge/<folder> are links to the top-level folders, so each file has one home."""
    for folder in FOLDERS:
        link = ROOT / PACKAGE / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), link


def _import_alone(module: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c",
                           f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    return module, proc.returncode, proc.stderr[-2000:]


@pytest.mark.timeout(600)
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = [m for m in MODULES if not m.endswith("__main__")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [f"{m}: {err}" for m, code, err in pool.map(_import_alone, modules) if code]
    assert failed == []
