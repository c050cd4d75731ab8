"""The import graph of jacal is layered: no module imports one from a layer above its own, and the
parts of the package (``jacal.X``, and each private helper ``jacal._internal.X``) import each other
without a cycle. Every import counts, the ones inside functions included: an import deferred to run
time is still a dependency.

Read from the source with ``ast`` (nothing is imported), over ``jacal/`` and the CLI package
(``cli/``, installed as ``jacal.cli``).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"jacal": ROOT / "jacal", "jacal.cli": ROOT / "cli"}

#: lowest first; a module may import from its own layer and the layers below it, never above.
LAYERS = (
    ("foundation", ("jacal._internal", "jacal._internal.validation", "jacal._internal.activations",
                    "jacal._internal.stats", "jacal._internal.io", "jacal._internal.plotting", "jacal._internal.store")),
    ("models and data", ("jacal.models", "jacal.data", "jacal.augment", "jacal.shift", "jacal.training",
                         "jacal.scenarios")),
    ("sensitivity and scores", ("jacal.sensitivity", "jacal._internal.scores", "jacal.population")),
    ("the feature pass", ("jacal.features",)),
    ("estimators and backends", ("jacal.confidence", "jacal.backends")),
    ("acquisition", ("jacal.acquisition",)),
    ("uses of acquisition", ("jacal.stopping", "jacal.io")),
    ("entry points", ("jacal", "jacal.pipeline", "jacal.loop", "jacal.replication", "jacal.serve", "jacal.cli")),
)
RANK = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
#: the layers the feature pass and everything under it sit in: none of them reaches into these
LOWER = {unit for unit, r in RANK.items() if r <= RANK["jacal.features"]}
HIGHER = ("jacal.acquisition", "jacal.confidence", "jacal.stopping", "jacal.loop", "jacal.serve",
          "jacal.replication", "jacal.cli", "jacal.pipeline", "jacal")


def _modules() -> dict:
    """``{dotted module name: path}`` for every module of the package and the CLI."""
    out = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module (``jacal.features.Need`` -> ``jacal.features``)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> list:
    """``[(line, imported module)]``: every jacal module ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from jacal import features` names a module; `from jacal import acquire` an attribute of jacal
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        found += [(node.lineno, _resolve(n)) for n in names if n == "jacal" or n.startswith("jacal.")]
    return found


def _unit(module: str) -> str:
    """The part of the package a module belongs to: ``jacal.X`` (``jacal`` for the package itself), and
    each private helper ``jacal._internal.X`` on its own, since the helpers sit in different layers."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:2] == ["_internal"] else parts[:2])


def test_every_part_of_the_package_has_a_layer():
    missing = sorted({_unit(m) for m in MODULES} - set(RANK))
    assert not missing, f"give these a layer in LAYERS: {missing}"


def test_the_feature_pass_and_what_is_below_it_import_nothing_from_above():
    bad = [f"{m}:{line} imports {target}" for m in MODULES if _unit(m) in LOWER
           for line, target in _imports(m) if _unit(target) in HIGHER]
    assert not bad, "\n".join(bad)


def test_no_module_imports_from_a_layer_above_its_own():
    bad = []
    for m in MODULES:
        for line, target in _imports(m):
            if RANK.get(_unit(target), -1) > RANK.get(_unit(m), len(LAYERS)):
                bad.append(f"{m}:{line} ({LAYERS[RANK[_unit(m)]][0]}) imports {target} "
                           f"({LAYERS[RANK[_unit(target)]][0]})")
    assert not bad, "\n".join(bad)


def test_the_entry_points_stand_side_by_side():
    """The loop, the replication suite, the server and the pipeline share code through the layers below
    them (the statistics in ``jacal._internal.stats``, say), never by importing one another; the CLI calls
    them all."""
    side = ("jacal.pipeline", "jacal.loop", "jacal.replication", "jacal.serve")
    bad = [f"{m}:{line} imports {target}" for m in MODULES if _unit(m) in side
           for line, target in _imports(m) if _unit(target) in side and _unit(target) != _unit(m)]
    assert not bad, "\n".join(bad)


def test_the_parts_of_the_package_import_each_other_without_a_cycle():
    graph: dict = {}
    for m in MODULES:
        graph.setdefault(_unit(m), set()).update(_unit(t) for _, t in _imports(m) if _unit(t) != _unit(m))
    state: dict = {}

    def visit(unit, path):
        if state.get(unit) == "done":
            return
        if state.get(unit) == "open":
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(unit):], unit]))
        state[unit] = "open"
        for nxt in sorted(graph.get(unit, ())):
            visit(nxt, [*path, unit])
        state[unit] = "done"

    for unit in sorted(graph):
        visit(unit, [])


@pytest.mark.parametrize("source, expected", [
    ("from jacal.acquisition.scores import bald", "jacal.acquisition.scores"),
    ("def f():\n    from jacal.acquisition import ldm", "jacal.acquisition.ldm"),
    ("import jacal.loop.runner as r", "jacal.loop.runner"),
    ("from jacal import acquire", "jacal"),
    ("from . import strategies", "jacal.acquisition.strategies"),
    ("from ..features import Need", "jacal.features"),
    ("importlib.import_module('jacal.serve')", "jacal.serve"),
])
def test_the_reader_sees_every_form_of_import(tmp_path, monkeypatch, source, expected):
    """The checks above are only as good as this reader: each form of import, deferred ones too."""
    path = tmp_path / "probe.py"
    path.write_text(source + "\n")
    monkeypatch.setitem(MODULES, "jacal.acquisition.probe", path)
    assert [t for _, t in _imports("jacal.acquisition.probe")] == [expected]
