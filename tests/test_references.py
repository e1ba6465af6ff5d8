"""Every repository path and module that code, comments, docstrings, configs and docs name exists:
a file moved or renamed leaves no pointer to where it used to be.

What counts as a reference (`stale_references`):
- a path under one of the repository's top folders: `captioner/features/cache.py`,
  `conf/cnn/*.yaml` (a glob must match something), `docs/benchmarks.md:42` (`:line` is dropped);
- a module file named without its top folder: `report.py` (some file of the repository has that
  name) or `compare/report.py` (beside the naming file, in a package above it, or under a top
  folder) when its first folder is one of the repository's (`torch/utils/_pytree.py` is not);
- a dotted name, `captioner.compare.report`, `captioner.train.main`, `captioner.report:main`: the longest
  prefix that is a module or package must exist and the next name must be defined at its top level.
Not references: URLs and anything inside another path (`https://host/captioner/x.py`), folders the
repository does not hold (`outputs/`, `data/`, `<data_root>/`), logger names
(`getLogger("captioner.progress")`), a quoted bare file name (`tmp_path / "sample.py"`: made by
the code, not named), and the variable part of a template: `sweeps/{name}.yaml` or
`docs/<sweep>/report.md` check only that something starts with the fixed part before it.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_FOLDERS = ("captioner", "conf", "tests", "docs", "benchmarks", "sweeps")
SCANNED = ("captioner/**/*.py", "conf/**/*.yaml", "sweeps/*", "benchmarks/*", "tests/*.py", "train.py",
           "README.md", "docs/*.md", "pyproject.toml")

MADE_HERE = ("outputs", "data", "multirun", "wandb")  # git-ignored folders that runs make
_NOT_INSIDE_ANOTHER_NAME = r"(?<![\w./\\<>{}$-])"  # nor a URL's path, a template's, a longer name
_TOP_PATH = re.compile(_NOT_INSIDE_ANOTHER_NAME + rf"((?:{'|'.join(TOP_FOLDERS)})/[\w./*-]*)")
_MODULE_FILE = re.compile(_NOT_INSIDE_ANOTHER_NAME + r"((?:[A-Za-z_]\w*/)*[A-Za-z_]\w*\.py)\b")
_DOTTED = re.compile(_NOT_INSIDE_ANOTHER_NAME
                     + r"((?:captioner|train|benchmarks|tests)(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?)")
_URL = re.compile(r"\w+://\S+")
_LOGGER_NAME = re.compile(r"""getLogger\(\s*["']([\w.]+)["']""")
_TEMPLATE_START = "{<$["  # f-string, <placeholder>, ${interpolation}, [choice]
# `train.log`, `captioner.egg-info`: file names that look dotted, checked as paths when they are paths
_FILE_SUFFIXES = frozenset({"py", "yaml", "yml", "md", "log", "json", "jsonl", "csv", "h5", "txt", "html",
                            "ckpt", "pth", "pt", "png", "jpg", "sh", "toml", "npy", "egg"})


@functools.cache
def _top_level_names(module_file: Path) -> frozenset[str]:
    names = set()
    for node in ast.parse(module_file.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                # names a module serves lazily (a module __getattr__) are named in __all__
                names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return frozenset(names)


def _module_file(root: Path, parts: list[str]) -> Path | None:
    base = root.joinpath(*parts)
    return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.is_file()), None)


def _dotted_exists(root: Path, dotted: str) -> bool:
    parts = dotted.replace(":", ".").split(".")  # an entry point's `module:function` too
    if parts[-1] in _FILE_SUFFIXES:
        return True
    for end in range(len(parts), 0, -1):
        module = _module_file(root, parts[:end])
        if module is not None:
            # a module's own attributes (`captioner.__file__`) are Python's, not names it defines
            return end == len(parts) or parts[end].startswith("__") or parts[end] in _top_level_names(module)
    return False


def _top_path_exists(root: Path, path: str, next_character: str) -> bool:
    if next_character and next_character in _TEMPLATE_START:
        return any(root.glob(path + "*"))
    if "*" in path:
        return any(root.glob(path))
    return (root / path).exists()


@functools.cache
def _repository_file_names(root: Path) -> frozenset[str]:
    return frozenset(p.name for top in TOP_FOLDERS for p in (root / top).rglob("*.py")) | {
        p.name for p in root.glob("*.py")}


def _module_file_exists(root: Path, source: Path, path: str) -> bool:
    if "/" not in path:
        return path in _repository_file_names(root)
    bases = [source.parent, *(p for p in source.parents if root in p.parents), root]
    bases += [root / top for top in TOP_FOLDERS]
    first_folder = path.split("/")[0]
    if first_folder in MADE_HERE:
        return True  # what runs write (git-ignored): it exists on some machines and not on others
    if not any((base / first_folder).is_dir() for base in bases):
        return True  # another project's file (torch/utils/_pytree.py) or outputs/, not ours
    return any((base / path).is_file() for base in bases)


def _quoted(line: str, start: int, end: int) -> bool:
    """The whole of a string literal: `"sample.py"`."""
    return start > 0 and end < len(line) and line[start - 1] in "\"'" and line[end] == line[start - 1]


def stale_references(text: str, source: Path, root: Path = REPO) -> list[str]:
    """`line: reference` for each reference in `text` (the contents of `source`) that does not exist."""
    loggers = set(_LOGGER_NAME.findall(text))
    stale = []
    for number, line in enumerate(text.splitlines(), 1):
        line = _URL.sub(" ", line)
        for match in _TOP_PATH.finditer(line):
            path = match.group(1).rstrip(".,;:")
            next_character = line[match.end():match.end() + 1]
            if not _top_path_exists(root, path, next_character):
                stale.append(f"{number}: {path}")
        for match in _MODULE_FILE.finditer(line):
            path = match.group(1)
            if path.split("/")[0] in TOP_FOLDERS or ("/" not in path and _quoted(line, *match.span())):
                continue
            if not _module_file_exists(root, source, path):
                stale.append(f"{number}: {path}")
        for match in _DOTTED.finditer(line):
            if match.group(1) not in loggers and not _dotted_exists(root, match.group(1)):
                stale.append(f"{number}: {match.group(1)}")
    return stale


def _scanned_files() -> list[Path]:
    return sorted({p for pattern in SCANNED for p in REPO.glob(pattern) if p.is_file()})


@pytest.mark.parametrize("path", _scanned_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_and_module_a_file_names_exists(path):
    stale = stale_references(path.read_text(encoding="utf-8"), path)
    assert not stale, f"{path.relative_to(REPO)} names what does not exist (line: name):\n" + "\n".join(stale)


def test_the_scanner_finds_the_stale_names_among_good_ones():
    # The stale names are glued together at run time, so that this file itself names nothing stale.
    gone_file, gone_path = "no_such" + "_module.py", "captioner/compare/" + "no_such_module.py"
    gone_module, gone_function = "captioner.compare." + "nowhere", "captioner.compare.report." + "nothing"
    text = "\n".join([
        "# see captioner/compare/report.py:12, conf/cnn/*.yaml, sweeps/{name}.yaml, `effects.py`,",
        f"# moved: {gone_path}, `{gone_file}`, {gone_module}.",
        "# fine: https://example.org/captioner/gone.py, outputs/gone/run.py, tests.conftest.REPO,",
        "# torch/utils/gone.py, compare/report.py, captioner.train.main, <data_root>/features/x.h5",
        "log = logging.getLogger(" + '"captioner.' + 'progress")  # a logger, not a module',
        f'path = tmp_path / "made_here.py"  # {gone_function}',
        '[project.scripts] captioner-report = "captioner.report:main", gone = "captioner.report:' + 'gone"',
    ])
    source = REPO / "captioner" / "compare" / "report.py"
    assert stale_references(text, source) == [f"2: {gone_path}", f"2: {gone_file}", f"2: {gone_module}",
                                              f"6: {gone_function}", "7: captioner.report:" + "gone"]
