"""Every public feature is one hop from ``jacal``: exported, resolvable, and named in its docstring."""
import importlib
import re

import jacal


def test_every_exported_name_resolves_and_is_documented():
    doc = jacal.__doc__
    for name in jacal.__all__:
        assert getattr(jacal, name) is not None
        assert re.search(rf"\b{re.escape(name)}\b", doc), f"{name} is exported but not listed in jacal's docstring"


def test_every_public_module_is_listed_and_reachable():
    for mod in jacal._SUBMODULES:
        assert f"``jacal.{mod}``" in jacal.__doc__, mod
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


def test_moved_private_modules_answer_with_a_deprecation_warning():
    import sys

    import pytest

    sys.modules.pop("jacal.acquisition._features", None)
    with pytest.warns(DeprecationWarning, match="moved to jacal.features"):
        old = importlib.import_module("jacal.acquisition._features")
    assert old.extract_features is jacal.features.extract_features
