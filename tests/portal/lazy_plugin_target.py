"""A module that only ``test_plugins`` imports, through a lazy registry entry."""

from __future__ import annotations

from tests.portal.test_plugins import Checker


class Target(Checker):
    pass
