"""The core install is complete: every package a module imports when it loads is declared in
``[project.dependencies]``, optional packages are imported only through ``llasa.extras.require``
(so a missing one names its extra), and every module imports with the optional ones absent.

`.ci/run` also proves README command 1 in a fresh venv; these tests catch a wrong import as soon
as it is written, in the full install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import llasa
from llasa.extras import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llasa"
# the server itself: the `serve` extra is the feature (llasa.serve.build_app names it when absent)
NEEDS_EXTRA_TO_IMPORT = {"llasa.serve.app": "serve"}


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_dist_name(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in specs}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, *, top_level: bool) -> list[tuple[int, str]]:
    """(line, top-level package) of the absolute imports in a module's body, or anywhere below it."""
    nodes = tree.body if top_level else [n for stmt in tree.body if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                                         for n in ast.walk(stmt)]  # fmt: skip
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _third_party(name: str) -> bool:
    return name not in sys.stdlib_module_names and name not in ("llasa", "__future__")


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_import_at_load_time_is_a_core_dependency():
    declared = _declared()
    providers = importlib.metadata.packages_distributions()
    missing = []
    for path in SOURCES:
        module = _module_name(path)
        if module in NEEDS_EXTRA_TO_IMPORT:
            continue
        for line, name in _imports(ast.parse(path.read_text()), top_level=True):
            if not _third_party(name):
                continue
            dists = {_dist_name(d) for d in providers.get(name, [name])}
            if not dists & declared:
                missing.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({', '.join(sorted(dists))})")
    assert not missing, "not in [project.dependencies]:\n" + "\n".join(missing)


def test_optional_packages_are_imported_through_require():
    direct = []
    for path in SOURCES:
        if _module_name(path) in NEEDS_EXTRA_TO_IMPORT:
            continue
        tree = ast.parse(path.read_text())
        for line, name in _imports(tree, top_level=True) + _imports(tree, top_level=False):
            if name in EXTRAS:
                direct.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not direct, "use llasa.extras.require (its error names the extra):\n" + "\n".join(direct)


def test_every_extra_package_is_declared_in_its_extra():
    providers = importlib.metadata.packages_distributions()
    for name, extra in EXTRAS.items():
        dists = {_dist_name(d) for d in providers.get(name, [name])}
        assert dists & _declared(extra), f"{name} is said to come with llasa[{extra}], which does not declare it"


# Runs in a fresh interpreter where every optional package fails to import, as in the core install.
_BLOCKED_IMPORT = """
import importlib, importlib.abc, pkgutil, sys
blocked = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
import llasa
skip = set(sys.argv[2].split(","))
names = [m.name for m in pkgutil.walk_packages(llasa.__path__, "llasa.") if m.name not in skip]
for name in names:
    importlib.import_module(name)
from llasa.cli import main
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code == 0, exit.code
from llasa.extras import MissingExtra
from llasa.verify.wer import PocketSphinxASR
try:
    PocketSphinxASR()
except MissingExtra as exc:
    print("MISSING:", exc)
print("IMPORTED", len(names))
"""


def test_every_core_module_imports_without_the_extras():
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, ",".join(EXTRAS), ",".join(NEEDS_EXTRA_TO_IMPORT)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    count = len([m for m in pkgutil.walk_packages(llasa.__path__, "llasa.")]) - len(NEEDS_EXTRA_TO_IMPORT)
    assert f"IMPORTED {count}" in done.stdout
    assert "MISSING: the wer verifier (PocketSphinx) needs the package 'pocketsphinx': pip install 'llasa[verify]'" in done.stdout


def test_require_names_the_extra_and_keeps_other_import_errors(tmp_path, monkeypatch):
    with pytest.raises(MissingExtra, match=r"plotting needs the package 'matplotlib': pip install 'llasa\[eval\]'"):
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        require("matplotlib", "plotting")
    with pytest.raises(MissingExtra, match=r"pip install no_such_package_here"):
        require("no_such_package_here", "a feature")
    # a package that is installed but broken inside is not reported as missing
    (tmp_path / "broken_pkg").mkdir()
    (tmp_path / "broken_pkg" / "__init__.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("broken_pkg", "a feature")
    assert not isinstance(caught.value, MissingExtra) and caught.value.name == "no_such_dependency_of_it"
