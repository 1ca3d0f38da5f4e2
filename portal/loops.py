"""One object per running event loop (pure: no Django).

The gateway's per-process helpers (its Redis connection, ledger, classifier batcher) hold
futures and transports that belong to one event loop; a process may run several loops
(tests run the gateway in a thread of its own), so each loop gets its own, dropped with
the loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``per_loop()`` is this event loop's object, made by ``factory`` on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        # The last loop asked about and its object: a process serves from one loop, and
        # this skips the weak dictionary (on the gateway's path several times a request).
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        found = self._made.get(loop)
        if found is None:
            found = self._made[loop] = self._factory()
        self._last = (weakref.ref(loop), found)
        return found

    def existing(self) -> T | None:
        """This loop's object if it was made, without making one."""
        return self._made.get(asyncio.get_running_loop())

    def all(self) -> list[T]:
        """Every loop's object."""
        return list(self._made.values())

    def clear(self) -> None:
        self._made.clear()
        self._last = None
