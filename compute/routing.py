"""Routing for the gateway: which ready replicas serve a model, and which one to use.

The table is read from the database (the truth) at most once per
``GATEWAY_ROUTE_TTL_S`` per process and shared by all requests. Between refreshes the
gateway learns passively: a replica that refuses a connection is set aside for a few
seconds, so a dead engine costs one failed connect, not a timeout per request.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

DOWN_FOR_S = 3.0
# A route table older than this many TTLs is refreshed before it answers (see RouteTable).
STALE_TTLS = 5


@dataclass
class Route:
    served_name: str
    owner_user_id: int | None
    owner_org_id: int | None
    visibility: str
    created: int
    replicas: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    model_version_id: int | None = None
    # CNY per million prompt / completion tokens (the model repo's prices).
    price_input: Decimal = Decimal(0)
    price_output: Decimal = Decimal(0)
    # url -> (replica id, node id), for usage records.
    replica_ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Whether its engines plant the text watermark (the deployment's engine_args).
    watermarked: bool = False

    @cached_property
    def prices(self) -> tuple[str, str]:
        """The prices as decimal strings (for usage rows: see ``compute.metering.ROW``)."""
        return str(self.price_input), str(self.price_output)

    def cost_ucny(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The price of a request in micro-CNY (what budgets count), rounded up."""
        return math.ceil(prompt_tokens * self._input_float + completion_tokens * self._output_float)

    @cached_property
    def _input_float(self) -> float:
        return float(self.price_input)

    @cached_property
    def _output_float(self) -> float:
        return float(self.price_output)


def load_routes() -> dict[str, Route]:
    """Active deployments, served adapters and their ready replicas on ready nodes
    (three queries).

    Runs in a worker thread outside any request, so it manages its own connection.
    """
    close_old_connections()
    try:
        return _query_routes()
    finally:
        close_old_connections()


def _query_routes() -> dict[str, Route]:
    """Deployments, their ready replicas, and served adapters (three queries)."""
    from compute.models import (
        Deployment,
        DeploymentStatus,
        NodeStatus,
        Replica,
        ReplicaStatus,
        ServedAdapter,
    )

    routes: dict[str, Route] = {}
    deps = Deployment.objects.filter(status=DeploymentStatus.ACTIVE).select_related(
        "model_version__repo"
    )
    for dep in deps:
        repo = dep.model_version.repo
        routes[dep.served_name] = Route(
            dep.served_name,
            repo.owner_user_id,
            repo.owner_org_id,
            repo.visibility,
            int(dep.created_at.timestamp()),
            model_version_id=dep.model_version_id,
            price_input=repo.price_input_cny_per_m,
            price_output=repo.price_output_cny_per_m,
            watermarked=dep.watermarked,
        )
    ready = Replica.objects.filter(
        status=ReplicaStatus.READY,
        node__status__in=[NodeStatus.READY, NodeStatus.DRAINING],
        deployment__status=DeploymentStatus.ACTIVE,
    ).exclude(url="")
    loaded: dict[int, list[tuple[str, str, tuple[int, int], set[str]]]] = {}
    for dep_id, name, url, secret, replica_id, node_id, adapters in ready.values_list(
        "deployment_id", "deployment__served_name", "url", "secret", "id", "node_id", "adapters"
    ):
        if name in routes:
            _add_replica(routes[name], url, secret, (replica_id, node_id))
        loaded.setdefault(dep_id, []).append(
            (url, secret, (replica_id, node_id), set(adapters or []))
        )
    served = ServedAdapter.objects.filter(deployment__status=DeploymentStatus.ACTIVE)
    for adapter in served.select_related("model_version__repo", "deployment"):
        if adapter.served_name in routes:
            continue  # a deployment's own name wins
        repo = adapter.model_version.repo
        route = routes[adapter.served_name] = Route(
            adapter.served_name,
            repo.owner_user_id,
            repo.owner_org_id,
            repo.visibility,
            int(adapter.created_at.timestamp()),
            model_version_id=adapter.model_version_id,
            price_input=repo.price_input_cny_per_m,
            price_output=repo.price_output_cny_per_m,
            watermarked=adapter.deployment.watermarked,
        )
        # Only the base's replicas whose engine reports the adapter loaded serve it.
        for url, secret, ids, names in loaded.get(adapter.deployment_id, []):
            if adapter.served_name in names:
                _add_replica(route, url, secret, ids)
    return routes


def _add_replica(route: Route, url: str, secret: str, ids: tuple[int, int]) -> None:
    route.replicas.append(url)
    route.secrets[url] = secret
    route.replica_ids[url] = ids


class RouteTable:
    """One per event loop. ``pick`` balances by least outstanding requests."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.routes: dict[str, Route] = {}
        self.loaded_at = -1.0
        self.lock = asyncio.Lock()
        self.refreshing: asyncio.Task[None] | None = None
        self.down_until: dict[str, float] = {}
        self.outstanding: dict[str, int] = {}

    async def current(self) -> dict[str, Route]:
        """The routes. Under traffic a table older than the TTL is served while one
        background task refreshes it, so no request queues behind the refresh; a table
        older than ``STALE_TTLS`` TTLs (the first request after a quiet spell) is
        refreshed first, so nobody sees a model stopped or missed one started minutes
        ago."""
        age = time.monotonic() - self.loaded_at
        if self.loaded_at < 0 or age > self.ttl_s * STALE_TTLS:
            async with self.lock:
                if self.loaded_at < 0 or time.monotonic() - self.loaded_at > self.ttl_s:
                    await self._load()
        elif age > self.ttl_s and self.refreshing is None:
            self.refreshing = asyncio.create_task(self._refresh())
        return self.routes

    async def _load(self) -> None:
        self.routes = await sync_to_async(load_routes)()
        self.loaded_at = time.monotonic()

    async def _refresh(self) -> None:
        try:
            await self._load()
        finally:
            self.refreshing = None

    def candidates(self, route: Route) -> list[str]:
        now = time.monotonic()
        usable = [u for u in route.replicas if self.down_until.get(u, 0) <= now]
        return sorted(usable, key=lambda u: self.outstanding.get(u, 0))

    def mark_down(self, url: str) -> None:
        self.down_until[url] = time.monotonic() + DOWN_FOR_S

    def begin(self, url: str) -> None:
        self.outstanding[url] = self.outstanding.get(url, 0) + 1

    def end(self, url: str) -> None:
        self.outstanding[url] = max(0, self.outstanding.get(url, 1) - 1)


_tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RouteTable] = (
    weakref.WeakKeyDictionary()
)


def route_table() -> RouteTable:
    loop = asyncio.get_running_loop()
    table = _tables.get(loop)
    if table is None:
        table = _tables[loop] = RouteTable(settings.GATEWAY_ROUTE_TTL_S)
    return table
