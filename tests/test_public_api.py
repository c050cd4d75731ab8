"""Every public feature is one hop from ``jacal``: exported and resolvable (tests/test_docs.py checks that
the API reference covers each one)."""
import importlib

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


def test_moved_private_modules_answer_with_a_deprecation_warning():
    import sys

    import pytest

    sys.modules.pop("jacal.acquisition._features", None)
    with pytest.warns(DeprecationWarning, match="moved to jacal.features"):
        old = importlib.import_module("jacal.acquisition._features")
    assert old.extract_features is jacal.features.extract_features
