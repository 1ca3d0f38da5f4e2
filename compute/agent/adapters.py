"""LoRA adapters kept loaded in one replica's engine (vLLM's runtime LoRA API).

The portal names, per replica, the adapters it wants (``[{"name", "revision", "files"}]``);
:class:`AdapterSync` converges the engine to that set: it downloads each adapter into the
model cache (by revision), ``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``
for names no longer wanted, and retries failures with backoff. Downloads and engine calls run
on the agent's thread pool; the loop thread only starts tasks and applies their results, so
the loop never waits on them and the bookkeeping needs no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from compute.agent.files import ModelCache

logger = logging.getLogger("compute.agent")

ENGINE_TIMEOUT_S = 120.0  # loading moves weights onto the model; generous on a busy CPU node
MAX_BACKOFF_S = 60.0


@dataclass
class _Task:
    """A load or unload in flight, for the engine process it was started against."""

    action: str  # "load" | "unload"
    revision: str
    generation: int
    future: Future[None]


class AdapterSync:
    """The adapters of one replica: desired (from the portal) and loaded (in its engine)."""

    def __init__(self, cache: ModelCache, pool: ThreadPoolExecutor) -> None:
        self.cache, self.pool = cache, pool
        self.desired: dict[str, dict[str, Any]] = {}
        self.loaded: dict[str, str] = {}  # name -> revision
        self.tasks: dict[str, _Task] = {}
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.generation = 0

    def want(self, adapters: list[dict[str, Any]] | None) -> None:
        """The portal's current list for this replica."""
        self.desired = {str(a["name"]): a for a in adapters or []}
        for name in list(self.failures):
            if name not in self.desired and name not in self.loaded:
                self._forget(name)

    def reset(self) -> None:
        """The engine (re)started: nothing is loaded in it, and tasks still running
        against the old process no longer count."""
        self.generation += 1
        self.loaded.clear()
        self.tasks.clear()
        self.failures.clear()
        self.retry_at.clear()

    def names(self) -> list[str]:
        return sorted(self.loaded)

    def step(self, base_url: str, secret: str) -> bool:
        """Apply finished tasks and start the next ones; True if the loaded set changed."""
        before = dict(self.loaded)
        self._collect()
        now = time.monotonic()
        for name, revision in list(self.loaded.items()):
            wanted = self.desired.get(name)
            if (wanted is None or wanted["revision"] != revision) and self._may_start(name, now):
                self._start(name, "unload", revision, partial(_unload, base_url, secret, name))
        for name, adapter in self.desired.items():
            if name not in self.loaded and self._may_start(name, now):
                load = partial(self._fetch_and_load, base_url, secret, adapter)
                self._start(name, "load", adapter["revision"], load)
        return before != self.loaded

    def _may_start(self, name: str, now: float) -> bool:
        return name not in self.tasks and now >= self.retry_at.get(name, 0.0)

    def _start(self, name: str, action: str, revision: str, work: Callable[[], None]) -> None:
        self.tasks[name] = _Task(action, revision, self.generation, self.pool.submit(work))

    def _collect(self) -> None:
        for name, task in list(self.tasks.items()):
            if not task.future.done():
                continue
            del self.tasks[name]
            if task.generation != self.generation:
                continue
            try:
                task.future.result()
            except Exception as exc:
                self._failed(name, task.action, exc)
                continue
            self._forget(name)
            if task.action == "load":
                self.loaded[name] = task.revision
                logger.info("adapter %s loaded", name)
            else:
                self.loaded.pop(name, None)
                logger.info("adapter %s unloaded", name)

    def _failed(self, name: str, action: str, exc: Exception) -> None:
        count = self.failures.get(name, 0) + 1
        backoff = min(MAX_BACKOFF_S, 0.5 * 2**count)
        self.failures[name] = count
        self.retry_at[name] = time.monotonic() + backoff
        self.errors[name] = f"{action} failed: {exc}"
        logger.warning("adapter %s: %s failed (retry in %.0fs): %s", name, action, backoff, exc)

    def _forget(self, name: str) -> None:
        self.failures.pop(name, None)
        self.retry_at.pop(name, None)
        self.errors.pop(name, None)

    def _fetch_and_load(self, base_url: str, secret: str, adapter: dict[str, Any]) -> None:
        path = self.cache.fetch(adapter)
        body = {"lora_name": str(adapter["name"]), "lora_path": str(path)}
        _engine_post(base_url, secret, "/v1/load_lora_adapter", body)


def _unload(base_url: str, secret: str, name: str) -> None:
    _engine_post(base_url, secret, "/v1/unload_lora_adapter", {"lora_name": name}, absent_ok=True)


def _engine_post(
    base_url: str, secret: str, path: str, body: dict[str, str], *, absent_ok: bool = False
) -> None:
    """POST to the engine; an error status raises with the engine's own message. With
    ``absent_ok``, 404 (the engine does not have that adapter) counts as done."""
    response = httpx.post(
        base_url + path,
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=ENGINE_TIMEOUT_S,
    )
    if absent_ok and response.status_code == 404:
        return
    if response.status_code != 200:
        raise RuntimeError(f"engine answered {response.status_code}: {response.text[:500]}")
