"""Limits, revocation and membership changes hold across gateway worker processes:
two real ``uvicorn portal.asgi:application`` processes sharing the test database and
Redis, and a fake engine upstream.

The processes lease a tenth of a key's per-minute limits (``GATEWAY_LEASE_SHARE=10``),
so keys of at least 80 requests per minute are admitted against leases
(``portal/limits/leases.py``) and smaller ones request by request."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from compute.agent.procs import wait_for
from portal.models import Organization
from portal.services.keys import sync_redis
from tests.factories import deployment
from tests.portal.fake_engine import serve_fake_engine
from tests.portal.gateways import add_replica, gateway_processes
from tests.portal.test_gateway import assert_openai_error
from tests.portal.test_limits import new_key


@pytest.fixture(scope="module")
def gateways(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    leases = {"GATEWAY_LEASE_SHARE": "10", "GATEWAY_LEASE_MS": "1000"}
    with gateway_processes(tmp_path_factory.mktemp("gateways"), count=2, **leases) as urls:
        yield urls


@pytest.fixture
def engine() -> Any:
    yield from serve_fake_engine()


def list_models(url: str, key: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})


def models_of(url: str, key: str) -> set[str]:
    response = list_models(url, key)
    return {m["id"] for m in response.json()["data"]} if response.status_code == 200 else set()


def wait_until_listed(urls: list[str], key: str, name: str) -> None:
    for url in urls:
        wait_for(
            lambda u=url: name in models_of(u, key),
            timeout_s=10,
            what=f"{name} routed by {url}",
            interval_s=0.05,
        )


def test_requests_per_minute_hold_across_two_gateway_processes(
    gateways, transactional_db, owner, engine
):
    model = serve(owner, "rpm", engine)
    key = new_key(owner, rpm_limit=10)
    wait_until_listed(gateways, key, model)  # /v1/models costs no request quota

    async def burst() -> list[int]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(f"{gateways[i % 2]}/v1/chat/completions", headers=headers, json=body)
                for i in range(30)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    codes = asyncio.run(burst())
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes


def serve(owner: Any, name: str, engine: Any) -> str:
    """A model served by this test's engine. Each test has its own name: the gateways
    live through the module, and a name an earlier test served may stay routed to that
    test's engine (gone by now) until their next route refresh."""
    served = deployment(owner.user, f"pub-{name}").served_name
    add_replica(served, engine[0])
    return str(served)


def burst(urls: list[str], key: str, count: int, model: str, **extra: Any) -> list[httpx.Response]:
    """``count`` chat requests to ``model`` at once, spread over ``urls``."""

    async def send() -> list[httpx.Response]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            calls = [
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions", headers=headers, json=body
                )
                for i in range(count)
            ]
            return list(await asyncio.gather(*calls))

    return asyncio.run(send())


def test_leased_requests_per_minute_hold_across_two_gateway_processes(
    gateways, transactional_db, owner, engine
):
    """Each process leases 10 of the key's 100 requests a minute at a time: together
    they never admit more than the limit (plus what refilled meanwhile), and what a lease
    holds at the end is all that may go unused."""
    model = serve(owner, "leased-rpm", engine)
    key = new_key(owner, rpm_limit=100, max_concurrent=1000)
    wait_until_listed(gateways, key, model)
    started = time.monotonic()
    first = burst(gateways[:1], key, 1, model)[0]
    assert first.status_code == 200, first.text
    # The first request took a lease: 10 requests from the bucket and 2 concurrency slots
    # to begin with (more as its requests need them), named after the lease.
    bucket = f"openmaas:rl:k{key_id(owner, key)}"
    assert float(sync_redis().hget(bucket, "rv")) < 91
    slots = sync_redis().zrange(bucket + ":conc", 0, -1)
    assert len(slots) == 2 and all(b"#" in s for s in slots), slots
    assert first.headers["x-ratelimit-remaining-requests"] == "99"
    answers = burst(gateways, key, 160, model)
    refill = (time.monotonic() - started) * 100 / 60
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429}, codes
    assert 100 - 1 - 2 * 10 <= codes.count(200) <= 100 - 1 + refill, codes
    for refused in (r for r in answers if r.status_code == 429):
        assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert refused.headers["x-ratelimit-limit-requests"] == "100"


def test_leased_concurrency_holds_across_two_gateway_processes(
    gateways, transactional_db, owner, engine
):
    """16 slots: each process's lease holds 2 (an eighth), the rest are taken request by
    request; 24 requests held open at once get exactly 16 through, and every slot is
    free after."""
    model = serve(owner, "leased-concurrency", engine)
    key = new_key(owner, rpm_limit=6000, max_concurrent=16)
    wait_until_listed(gateways, key, model)
    conc = f"openmaas:rl:k{key_id(owner, key)}:conc"
    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(burst, gateways, key, 24, model, user="sleep:2")
        leased = wait_for(
            lambda: sum(b"#" in m for m in sync_redis().zrange(conc, 0, -1)) or None,
            timeout_s=10,
            what="leased slots",
            interval_s=0.02,
        )
        codes = [r.status_code for r in answers.result()]
    assert sorted(codes) == [200] * 16 + [429] * 8, codes
    assert leased in (2, 4)  # one or both processes had taken their lease by then
    wait_for(lambda: sync_redis().zcard(conc) == 0, timeout_s=10, what="slots handed back")


def key_id(actor: Any, key: str) -> int:
    listed = actor.client().get("/api/keys/").json()["results"]
    return next(k["id"] for k in listed if key.startswith(k["prefix"]))


def test_revoked_key_is_refused_by_every_process_within_a_second(gateways, transactional_db, owner):
    created = owner.client().post("/api/keys/", {"name": "short"}, format="json").json()
    for url in gateways:
        assert list_models(url, created["key"]).status_code == 200  # cached and memoised
    assert owner.client().delete(f"/api/keys/{created['id']}/").status_code == 204
    revoked_at = time.monotonic()
    for url in gateways:
        wait_for(
            lambda u=url: list_models(u, created["key"]).status_code == 401,
            timeout_s=1.0 - (time.monotonic() - revoked_at),
            what="revocation reaching every gateway process",
            interval_s=0.02,
        )
    assert time.monotonic() - revoked_at < 1.0


def test_removed_member_loses_org_models_on_every_process_within_a_second(
    gateways, transactional_db, owner, org, teammate
):
    deployment(Organization.objects.get(pk=org.pk), "team", visibility="org")
    wait_until_listed(gateways, teammate.key, "acme-lab/team")
    response = owner.client().delete("/api/orgs/acme-lab/members/tomas/")
    assert response.status_code == 204
    removed_at = time.monotonic()
    for url in gateways:
        wait_for(
            lambda u=url: "acme-lab/team" not in models_of(u, teammate.key),
            timeout_s=1.5,
            what="membership removal reaching every gateway process",
            interval_s=0.02,
        )
    assert time.monotonic() - removed_at < 1.5
    body = {"model": "acme-lab/team", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(
        f"{gateways[0]}/v1/chat/completions",
        headers={"Authorization": f"Bearer {teammate.key}"},
        json=body,
    )
    assert_openai_error(refused, 404, "model_not_found")
