"""The agent loop: register, then heartbeat-and-reconcile (kubelet style).

Each heartbeat reports every local replica and workload and receives the node's whole
desired state; the agent starts what is missing, stops what is no longer wanted and restarts
what crashed (replicas; a failed workload is reported and the portal decides). A restarted
agent or portal converges again with nothing lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from compute.agent.files import ModelCache
from compute.agent.inventory import inventory
from compute.agent.replica import Listen, LocalReplica
from compute.agent.workload import WORKLOAD_ENTRIES, LocalWorkload

logger = logging.getLogger("compute.agent")

AGENT_VERSION = "0.1.0"
TICK_S = 0.25


class AgentRejected(Exception):
    """The portal refused the node token: stop for good."""


class Agent:
    def __init__(
        self,
        portal: str,
        token: str,
        work_dir: Path,
        *,
        address: str = "127.0.0.1",
        listen: Listen | None = None,
        engines: list[str] | None = None,
        workload_entries: Collection[str] = WORKLOAD_ENTRIES,
    ) -> None:
        """``workload_entries``: the Python modules a workload may run (tests add their own
        stand-in runner; a node operator has no flag for it)."""
        self.portal = portal.rstrip("/")
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(30.0, connect=5.0)
        )
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.address, self.engines = address, engines
        self.listen = listen or Listen()
        self.cache = ModelCache(work_dir)
        # Downloads and adapter loads; a few, so one large model does not hold up the rest.
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch")
        self.local: dict[int, LocalReplica] = {}
        self.workloads: dict[int, LocalWorkload] = {}
        # Workloads stopped because the portal dropped them: reported once more, then gone.
        self.departed: list[LocalWorkload] = []
        self.workload_entries = frozenset(workload_entries)
        self.interval_s = 2.0
        self.stop_requested = False

    def run(self) -> int:
        try:
            self._register()
            self._loop()
        except AgentRejected as exc:
            logger.error("%s", exc)
            return 1
        finally:
            self.shutdown()
        return 0

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.portal}/api/compute/agent/{path}", json=body)
        if response.status_code in (401, 403):
            raise AgentRejected(f"portal refused this node: {response.text[:200]}")
        if path == "register" and response.status_code == 400:
            # E.g. an address outside the pool's networks: retrying cannot help.
            raise AgentRejected(f"portal refused this node's inventory: {response.text[:500]}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _register(self) -> None:
        delay = 1.0
        while not self.stop_requested:
            try:
                answer = self._post(
                    "register", inventory(self.address, self.engines, AGENT_VERSION)
                )
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("register failed (%s); retrying in %.0fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 30)
                continue
            self.interval_s = float(answer.get("heartbeat_interval_s", 2))
            logger.info("registered as node %s", answer.get("node"))
            return

    def _loop(self) -> None:
        next_beat = 0.0
        while not self.stop_requested:
            changed = any([r.step() for r in list(self.local.values())])
            changed = any([w.step() for w in list(self.workloads.values())]) or changed
            if changed or time.monotonic() >= next_beat:
                try:
                    self._heartbeat()
                    next_beat = time.monotonic() + self.interval_s
                except (httpx.HTTPError, ValueError) as exc:
                    logger.warning("heartbeat failed: %s", exc)
                    next_beat = time.monotonic() + min(self.interval_s, 2.0)
            self._sleep(TICK_S)

    def _heartbeat(self) -> None:
        departed = list(self.departed)
        workloads = [w.report() for w in [*departed, *self.workloads.values()]]
        body = {"replicas": [r.report() for r in self.local.values()], "workloads": workloads}
        answer = self._post("heartbeat", body)
        self.departed = [w for w in self.departed if w not in departed]
        self.interval_s = float(answer.get("heartbeat_interval_s", self.interval_s))
        self.reconcile(answer.get("replicas", []), answer.get("workloads", []))

    def reconcile(
        self, desired: list[dict[str, Any]], workloads: list[dict[str, Any]] | None = None
    ) -> None:
        wanted = {d["id"]: d for d in desired}
        for rid in [rid for rid in self.local if rid not in wanted]:
            logger.info("stopping replica %s (no longer wanted)", rid)
            self.local.pop(rid).stop()
        for rid, spec in wanted.items():
            if rid in self.local:
                self.local[rid].update(spec)
            else:
                self.local[rid] = LocalReplica(
                    spec, self.cache, self.pool, self.work_dir / "logs", self.listen
                )
        self.reconcile_workloads(workloads or [])

    def reconcile_workloads(self, desired: list[dict[str, Any]]) -> None:
        """Stop local attempts the portal no longer lists (a superseded attempt is stopped
        before its successor starts, and not reported: the portal has moved on), then
        start the listed ones this node does not run yet."""
        wanted = {int(d["id"]): d for d in desired}
        for wid, local in list(self.workloads.items()):
            spec = wanted.get(wid)
            if spec is not None and int(spec["attempt"]) == local.attempt:
                continue
            logger.info("stopping workload %s (no longer wanted)", local.key)
            del self.workloads[wid]
            local.stop()
            local.discard()
            if spec is None:
                self.departed.append(local)
        for wid, spec in wanted.items():
            if wid not in self.workloads:
                self.workloads[wid] = LocalWorkload(
                    spec,
                    cache=self.cache,
                    pool=self.pool,
                    work_dir=self.work_dir,
                    portal=self.portal,
                    entries=self.workload_entries,
                )

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def shutdown(self) -> None:
        for replica in self.local.values():
            replica.stop()
        self.local.clear()
        for workload in self.workloads.values():
            workload.stop()
        self.workloads.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()
