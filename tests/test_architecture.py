"""The package's shape: stages import only earlier stages, no import loops, no borrowed privates."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "captioner"
# The pipeline's stages in the order data flows; a stage may import itself and earlier stages only.
# `shared` is the project-wide vocabulary every stage may use (errors, paths, the run folder, ...).
STAGES = ["shared", "settings", "sources", "features", "model", "data", "scoring", "records", "training",
          "inference", "launch", "trainer_setup", "runs", "compare", "commands"]
SHARED = {"errors", "paths", "worker_processes"}
COMMANDS = {"caption", "evaluate", "report", "prepare", "train"}  # `python -m captioner.<command>`


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _stage(module: str) -> str:
    if module == "captioner":  # the package's public API (Captioner, ...): a command's view of it
        return "commands"
    name = module.split(".")[1] if "." in module else ""
    if name in SHARED or not name:
        return "shared"
    return "commands" if name in COMMANDS else name


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(imported module, imported name) for every `from captioner... import ...` in the file,
    at any depth (imports inside functions count: they are still dependencies)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("captioner"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule if submodule in modules else node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("captioner")]
    return found


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(STAGES) - {"shared", "commands"} | {"conf"}  # conf/: the Hydra configs, no code
    top_level = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top_level == SHARED | COMMANDS


def test_stages_import_only_earlier_stages():
    modules = _modules()
    backwards = []
    for module, path in modules.items():
        for imported, _ in _imports(path, modules):
            if STAGES.index(_stage(imported)) > STAGES.index(_stage(module)):
                backwards.append(f"{module} imports {imported}")
    assert not backwards, "\n".join(backwards)


def _find_loop(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (loop := visit(nxt, [*path, nxt])):
                return loop
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (loop := visit(module, [module])):
            return loop
    return None


def test_the_import_graph_has_no_loop():
    modules = _modules()
    graph = {m: {i for i, _ in _imports(p, modules) if i in modules and i != m} for m, p in modules.items()}
    loop = _find_loop(graph)
    assert loop is None, " -> ".join(loop)


def test_the_loop_finder_finds_loops_and_only_loops():
    assert _find_loop({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_loop({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no loop
    assert _find_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_loop({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    borrowed = [f"{m} imports {name} from {imported}" for m, p in modules.items()
                for imported, name in _imports(p, modules) if name.startswith("_")]
    assert not borrowed, "\n".join(borrowed)
