"""Every public feature is one hop from ``jacal``: exported and resolvable (tests/project/test_docs.py
checks that the API reference covers each one)."""
import importlib
import re

import jacal


def test_every_exported_name_resolves():
    for name in jacal.__all__:
        assert getattr(jacal, name) is not None


def test_every_public_module_is_reachable_and_exports_what_it_names():
    for mod in jacal._SUBMODULES:
        assert getattr(jacal, mod) is importlib.import_module(f"jacal.{mod}")
        exported = getattr(getattr(jacal, mod), "__all__", [])
        for name in exported:
            assert hasattr(getattr(jacal, mod), name), f"jacal.{mod}.__all__ names {name}, which it lacks"


def test_unknown_attribute_is_an_attribute_error():
    try:
        jacal.no_such_thing
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("jacal.no_such_thing resolved")


def test_no_pre_release_shims():
    """0.1.0 is the first release: moved modules and renamed methods have no aliases."""
    import pytest

    for moved in ("jacal.acquisition._features", "jacal.checkpoint", "jacal._foreign", "jacal._model_utils",
                  "jacal._io", "jacal._validation", "jacal._store"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(moved)
    import jacal._internal.io

    for name in ("load_array", "load_image_folder", "image_transform", "decode_image", "list_image_folder",
                 "IMAGE_SUFFIXES"):
        assert not hasattr(jacal._internal.io, name), name
    assert not hasattr(jacal.ConfidenceEstimator, "fit") and not hasattr(jacal.ConfidenceEstimator, "predict_proba")


def _raised_texts(path):
    """The string constants inside every ``raise`` statement of a module (f-string parts included)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield node.lineno, sub.value


def test_library_errors_name_parameters_not_cli_flags():
    """The library raises with its parameters' names; only the CLI speaks in flags (it translates)."""
    from pathlib import Path

    root = Path(jacal.__file__).parent
    flagged = [f"{p.relative_to(root)}:{line}: {text!r}" for p in sorted(root.rglob("*.py"))
               if "serve" not in p.parts for line, text in _raised_texts(p) if re.search(r"(?<![\w-])--[a-z]", text)]
    assert not flagged, "\n".join(flagged)


def test_label_name_errors_name_the_parameter():
    import pytest

    for text, fragment in (("a,,b", "`label_names` must be"), ("a,a", "`label_names` repeats")):
        with pytest.raises(jacal.JacalError, match=fragment):
            jacal.io.parse_label_names(text)


def test_docstrings_carry_no_tracker_numbers_or_history():
    """Docstrings and comments say what the code does and why; history goes to CHANGELOG.md."""
    from pathlib import Path

    root = Path(jacal.__file__).parent
    pattern = re.compile(r"issue #?\d+|was tried|\(was \d|sweep version \d|protocol change", re.IGNORECASE)
    hits = [f"{p}:{n}: {line.strip()}" for p in sorted([*root.rglob("*.py"), *(root.parent / "cli").glob("*.py")])
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_the_library_holds_no_test_hooks():
    """Fault injection lives in the tests (they wrap the units of work); the package and the CLI read no
    test-only environment variable and define no test-only function."""
    from pathlib import Path

    root = Path(jacal.__file__).parent
    pattern = re.compile(r"JACAL_TEST|def \w*for_tests?\b")
    hits = [f"{p}:{n}: {line.strip()}" for p in sorted([*root.rglob("*.py"), *(root.parent / "cli").glob("*.py")])
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_every_package_of_jacal_is_shipped():
    """``pyproject.toml`` lists the packages by name: a package folder missing from the list would be
    absent from the wheel while every test of the checkout still imports it."""
    import tomllib
    from pathlib import Path

    root = Path(jacal.__file__).parent
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("jacal", *p.parent.relative_to(root).parts)) for p in root.rglob("__init__.py")}
    found |= {"jacal.cli"}  # installed from cli/ (package-dir)
    assert found == listed, (f"missing from pyproject.toml: {sorted(found - listed)}; "
                             f"listed, absent: {sorted(listed - found)}")
