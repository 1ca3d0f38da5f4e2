from __future__ import annotations

import sys

import pytest

from portal.errors import PlatformError
from portal.plugins import Registry, UnknownPlugin


class Checker:
    pass


class LazyChecker(Checker):
    pass


class NotAChecker:
    pass


def test_registered_class_is_returned_by_name():
    reg = Registry("checker", Checker)

    @reg.register("exact")
    class Exact(Checker):
        pass

    assert reg.get("exact") is Exact
    assert reg.names() == ["exact"]
    assert "exact" in reg


def test_registering_a_name_twice_fails():
    reg = Registry("checker", Checker)
    reg.register("exact")(type("A", (Checker,), {}))
    with pytest.raises(ValueError, match="already registered"):
        reg.register("exact")(type("B", (Checker,), {}))
    with pytest.raises(ValueError, match="already registered"):
        reg.register_lazy("exact", "tests.portal.test_plugins:LazyChecker")


def test_class_outside_the_base_is_refused_at_registration():
    reg = Registry("checker", Checker)
    with pytest.raises(TypeError, match="is not a Checker"):
        reg.register("wrong")(NotAChecker)  # type: ignore[arg-type]


def test_lazy_target_is_imported_on_first_get_and_checked_against_the_base(monkeypatch):
    reg = Registry("checker", Checker)
    reg.register_lazy("lazy", "tests.portal.lazy_plugin_target:Target")
    reg.register_lazy("bad", "tests.portal.test_plugins:NotAChecker")
    monkeypatch.delitem(sys.modules, "tests.portal.lazy_plugin_target", raising=False)

    assert "tests.portal.lazy_plugin_target" not in sys.modules
    assert reg.names() == ["bad", "lazy"]
    loaded = reg.get("lazy")
    assert loaded.__module__ == "tests.portal.lazy_plugin_target"
    assert issubclass(loaded, Checker)
    with pytest.raises(TypeError, match="is not a Checker"):
        reg.get("bad")


def test_lazy_entry_is_taken_over_by_the_class_it_names():
    reg = Registry("checker", Checker)
    reg.register_lazy("lazy", "tests.portal.test_plugins:LazyChecker")
    assert reg.register("lazy")(LazyChecker) is LazyChecker
    assert reg.get("lazy") is LazyChecker


def test_malformed_lazy_target_is_refused():
    with pytest.raises(ValueError, match="module:attr"):
        Registry("checker", Checker).register_lazy("x", "tests.portal.test_plugins")


def test_unknown_name_suggests_the_closest_one():
    reg = Registry("checker", Checker)
    reg.register_lazy("dedup_near", "tests.portal.test_plugins:LazyChecker")
    reg.register_lazy("dedup_exact", "tests.portal.test_plugins:LazyChecker")

    with pytest.raises(UnknownPlugin) as caught:
        reg.get("dedup_nera", param="steps[0].step")

    assert isinstance(caught.value, PlatformError)
    assert caught.value.code == "unknown_plugin"
    assert caught.value.param == "steps[0].step"
    assert "Did you mean 'dedup_near'?" in caught.value.message


def test_unknown_name_without_param_names_the_registry():
    with pytest.raises(UnknownPlugin) as caught:
        Registry("checker", Checker).get("anything")
    assert caught.value.param == "checker"
    assert "Did you mean" not in caught.value.message
