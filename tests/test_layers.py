"""Imports point one way: each module of llasa imports only its own layer and the layers below.

The graph is read from the source with `ast`, so it holds every import: at module level, inside
functions (the lazy ones) and under ``TYPE_CHECKING``, and the modules that registries name as
strings (``"llasa.serve.app"``, ``"llasa.verify.wer:WERVerifier"``) to import on first use.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llasa"

# Bottom to top. Speech flows audio -> codec -> lm -> tts; verifiers judge audio against text
# alone, below tts, which borrows the wer verifier's ASR to transcribe a voice clip given without
# its transcript; search picks among candidates, serve puts it behind HTTP; corpora (data) feed training; evaluation measures
# all of it, and `llasa.cli` gathers every layer's verbs. A `cli` module belongs to the layer it
# drives: `llasa.codec.cli` may import the codec layer and below, never a higher one.
LAYERS = {
    "base": ["llasa", "llasa.audio", "llasa.checkpoint", "llasa.cli_args", "llasa.config", "llasa.defaults",
             "llasa.extras", "llasa.hardware"],  # fmt: skip
    "codec": ["llasa.codec"],
    "lm": ["llasa.lm"],
    "verify": ["llasa.verify"],
    "tts": ["llasa.tts"],
    "search": ["llasa.search"],
    "serve": ["llasa.serve"],
    "data": ["llasa.data"],
    "train": ["llasa.train"],
    "eval": ["llasa.eval"],
    "cli": ["llasa.cli"],
}
ORDER = list(LAYERS)

# a string that is all a module's name (and perhaps ":attribute"): an import by name
NAMED_MODULE = re.compile(r"llasa(\.\w+)+(:\w+)?")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_sources() -> dict[str, str]:
    return {module_name(path): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the llasa modules it imports. ``from package import name`` points at the
    submodule when ``name`` is one, else at the package; the parent packages that Python runs
    first are not edges (a package's ``__init__`` may import its submodules and they a sibling
    through it, as ``from llasa.codec import loading`` does)."""
    modules = set(sources)

    def existing(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, source in sources.items():
        package = module if _is_package(module, sources) else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets.update(existing(alias.name) for alias in node.names if alias.name.split(".")[0] == "llasa")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    above = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(above + ([base] if base else []))
                if base.split(".")[0] != "llasa":
                    continue
                for alias in node.names:
                    name = f"{base}.{alias.name}"
                    targets.add(name if name in modules else existing(base))
            for name in _named_modules(node):
                targets.add(existing(name))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _named_modules(node: ast.AST) -> list[str]:
    """Modules named by strings that registries import on first use: the items of a list, tuple,
    set or dict (``COMMAND_MODULES``, ``_LAZY``), and the argument of ``import_module``. Other
    strings that look like a module's name (a logger's) are not imports."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        values = node.elts
    elif isinstance(node, ast.Dict):
        values = node.values
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
        values = node.args[:1]
    else:
        return []
    return [
        v.value.partition(":")[0]
        for v in values
        if isinstance(v, ast.Constant) and isinstance(v.value, str) and NAMED_MODULE.fullmatch(v.value)
    ]


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def layer_of(module: str) -> str | None:
    """The layer of the longest name in LAYERS that is the module or a package above it."""
    covering = [
        (len(name), layer)
        for layer, names in LAYERS.items()
        for name in names
        if module == name or (name != "llasa" and module.startswith(name + "."))
    ]
    return max(covering)[1] if covering else None


def is_cli(module: str) -> bool:
    return module.rpartition(".")[2] == "cli"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if ORDER.index(high) > ORDER.index(low):
                problems.append(f"{module} (layer {low}) imports {target} (layer {high}, above it)")
            if is_cli(target) and module != "llasa.cli":
                problems.append(f"{module} imports {target}: a verb's module is no library; share through llasa.cli_args")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    reach = {module: reachable(module) for module in graph}
    components = {frozenset(m for m in reach[module] if module in reach[m]) | {module} for module in graph}
    return sorted(sorted(c) for c in components if len(c) > 1)


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return read_sources()


def test_every_module_has_a_layer(sources):
    assert [m for m in sources if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer(sources):
    assert layer_violations(import_graph(sources)) == []


def test_no_import_cycles_between_files(sources):
    assert import_cycles(import_graph(sources)) == []


@pytest.mark.parametrize(
    "added",
    [
        "import llasa.tts\n",
        "from llasa import tts\n",
        "def synthesizer():\n    from llasa.tts import Synthesizer\n    return Synthesizer\n",
        "def searcher():\n    from ..search import Searcher\n    return Searcher\n",
        "MODULES = ['llasa.serve.app']\n",
    ],
    ids=["import", "from-package", "in-a-function", "relative", "by-name"],
)
def test_an_upward_import_is_caught(sources, added):
    changed = {**sources, "llasa.lm.model": sources["llasa.lm.model"] + "\n\n" + added}
    assert [p for p in layer_violations(import_graph(changed)) if p.startswith("llasa.lm.model ")]


def test_a_cycle_is_caught(sources):
    changed = {**sources, "llasa.lm.vocab": sources["llasa.lm.vocab"] + "\n\nimport llasa.lm.prompt\n"}
    assert ["llasa.lm.prompt", "llasa.lm.vocab"] in import_cycles(import_graph(changed))


def test_a_verb_module_borrowed_by_another_is_caught(sources):
    changed = {**sources, "llasa.eval.cli": sources["llasa.eval.cli"] + "\n\nfrom llasa.codec.cli import _encode\n"}
    assert "llasa.eval.cli imports llasa.codec.cli" in "\n".join(layer_violations(import_graph(changed)))
