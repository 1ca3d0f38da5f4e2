"""Moderation: checkers (lexicon, patterns, PII, classifier, guard model) and the pipeline.

``CHECKERS`` is the registry of checker classes by name (a ``portal.plugins.Registry``).
It is built on first access, because ``portal.plugins`` needs a configured Django while
the checker modules themselves stay pure (the gateway and the bench run them without
Django). Every entry is lazy (``"module:Class"``), so looking one up imports only it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from governance.moderation.types import Checker
    from portal.plugins import Registry

BUILTIN_CHECKERS: dict[str, str] = {
    "lexicon": "governance.moderation.lexicon:LexiconChecker",
    "patterns": "governance.moderation.patterns:PatternChecker",
    "pii": "governance.moderation.pii:PiiChecker",
    "classifier": "governance.moderation.classifier:ClassifierChecker",
    # Needs a ``call`` (how to reach the model): not in the default pipeline.
    "guard": "governance.moderation.guard:GuardChecker",
}

_lock = threading.Lock()
_registry: Registry[Checker] | None = None


def checkers() -> Registry[Checker]:
    """The checker registry (``CHECKERS``), created with the built-in lazy entries."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _make_registry()
        return _registry


def _make_registry() -> Registry[Checker]:
    from portal.plugins import Registry

    class CheckerRegistry(Registry["Checker"]):
        """A registry whose entries need ``name``, ``cost`` and ``check`` (the protocol
        has data members, so ``issubclass`` cannot test it)."""

        def _check_base(self, name: str, cls: object) -> None:
            if not (isinstance(cls, type) and all(hasattr(cls, a) for a in _MEMBERS)):
                raise TypeError(f"checker {name!r}: {cls!r} lacks one of {_MEMBERS}.")

    registry = CheckerRegistry("checker", cast("type[Checker]", object))
    for name, target in BUILTIN_CHECKERS.items():
        registry.register_lazy(name, target)
    return registry


_MEMBERS = ("name", "cost", "check")


def __getattr__(name: str) -> Any:
    if name == "CHECKERS":
        return checkers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
