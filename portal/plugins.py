"""One small typed plug-in registry for the whole platform.

A :class:`Registry` maps names to subclasses of one base class. Entries are added with a
decorator (``@REG.register("name")``) or lazily as ``"module:attr"`` strings, imported on
first :meth:`Registry.get` so that heavy code (engines, numpy, tokenizers) loads only
where it is used. Used by dataset pipeline steps, evaluation metrics, moderation
checkers and scheduler policies.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from portal.errors import PlatformError

T = TypeVar("T")


class UnknownPlugin(PlatformError):
    """A name that is not in the registry; ``param`` names the field that carried it."""

    code = "unknown_plugin"


class Registry(Generic[T]):
    """Names → subclasses of ``base``.

    Programming errors (a duplicate name, a class outside ``base``, a malformed lazy
    target) raise ``ValueError``/``TypeError`` at registration or first use; an unknown
    name — usually user input — raises :class:`UnknownPlugin` with a suggestion.
    """

    def __init__(self, name: str, base: type[T]) -> None:
        self.name = name
        self.base = base
        self._entries: dict[str, type[T] | str] = {}
        # Re-entrant: importing a lazy target may run its module's own @register.
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Decorator registering a class under ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            self._check_base(name, cls)
            with self._lock:
                current = self._entries.get(name)
                # A lazy entry naming this very class is replaced when its module loads.
                if current is not None and current != _path_of(cls):
                    raise ValueError(f"{self.name} {name!r} is already registered ({current}).")
                self._entries[name] = cls
            return cls

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"``, imported (and checked) on first :meth:`get`."""
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"Lazy target {target!r} is not of the form 'module:attr'.")
        with self._lock:
            if name in self._entries:
                raise ValueError(f"{self.name} {name!r} is already registered.")
            self._entries[name] = target

    def get(self, name: str, *, param: str | None = None) -> type[T]:
        """The class registered as ``name``, importing a lazy target the first time.

        Raises :class:`UnknownPlugin` (``param`` defaults to the registry's name) with a
        "did you mean" hint when no such name is registered.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPlugin(self._unknown_message(name), param=param or self.name)
        if isinstance(entry, str):
            with self._lock:
                entry = self._load(name, entry)
        return entry

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _load(self, name: str, target: str) -> type[T]:
        current = self._entries[name]
        if not isinstance(current, str):
            return current  # another thread loaded it, or the module registered itself
        module, _, attr = target.partition(":")
        loaded = getattr(importlib.import_module(module), attr)
        self._check_base(name, loaded)
        self._entries[name] = loaded
        return loaded  # type: ignore[no-any-return]

    def _check_base(self, name: str, cls: object) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{self.name} {name!r}: {cls!r} is not a {self.base.__name__}.")

    def _unknown_message(self, name: str) -> str:
        message = f"Unknown {self.name} {name!r}."
        close = difflib.get_close_matches(name, self._entries, n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        return f"{message} Known: {', '.join(self.names())}."


def _path_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
