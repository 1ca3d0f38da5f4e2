"""Extension points: how a sub-platform adds to hub-core pages without the core importing it.

The hub core imports no sub-platform (the import contracts in ``pyproject.toml``); a
sub-platform registers its callables here from its ``AppConfig.ready()``.
"""

from __future__ import annotations

from collections.abc import Callable

ServedCheck = Callable[[str], bool]

_served_checks: list[ServedCheck] = []


def register_served_check(check: ServedCheck) -> None:
    """Register ``check(full_name)``: whether a model is served (callable through ``/v1``)."""
    if check not in _served_checks:
        _served_checks.append(check)


def is_served(full_name: str) -> bool:
    """Whether any registered sub-platform serves the model ``full_name``."""
    return any(check(full_name) for check in _served_checks)
