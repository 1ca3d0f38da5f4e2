"""Limits, revocation and membership changes hold across gateway worker processes:
two real ``uvicorn portal.asgi:application`` processes sharing the test database and
Redis, and a fake engine upstream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from compute.agent.procs import wait_for
from portal.models import Organization
from tests.factories import deployment
from tests.portal.fake_engine import serve_fake_engine
from tests.portal.gateways import add_replica, gateway_processes
from tests.portal.test_gateway import assert_openai_error
from tests.portal.test_limits import new_key


@pytest.fixture(scope="module")
def gateways(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with gateway_processes(tmp_path_factory.mktemp("gateways"), count=2) as urls:
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
    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    key = new_key(owner, rpm_limit=10)
    wait_until_listed(gateways, key, "olivia/pub")  # /v1/models costs no request quota

    async def burst() -> list[int]:
        body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]}
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
