"""Authentication on the /v1 gateway: a racing cache fill cannot revive a revoked key
nor keep stale roles, failures are throttled per client address before any database
look-up, and an unreachable Redis is refused (or, if configured, tolerated)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from compute.agent.procs import free_port
from portal.limits import scripts
from portal.models import APIKey, Role
from portal.models.keys import hash_key
from portal.services import accounts
from portal.services.keys import _scripts as auth_scripts
from portal.services.keys import (
    fill_grant,
    read_grant,
    revoke_api_key,
    session_grant,
    sync_redis,
)
from tests.factories import deployment
from tests.portal.fake_engine import serve_fake_engine
from tests.portal.gateways import add_replica, gateway_processes
from tests.portal.test_gateway import assert_openai_error


def fill(raw: str, grant: Any) -> Any:
    """The gateway's cache-fill step, for a grant read from the database earlier."""

    async def run() -> Any:
        from portal.redis import async_redis

        redis = async_redis()
        try:
            return await fill_grant(redis, auth_scripts(redis)[1], hash_key(raw), grant, "test")
        finally:
            await redis.aclose()

    return asyncio.run(run())


def test_racing_cache_fill_cannot_revive_a_revoked_key(owner):
    key = APIKey.objects.get(user=owner.user)
    read_before_revocation = read_grant(owner.key)
    assert read_before_revocation is not None
    revoke_api_key(owner.user, key.pk)
    assert fill(owner.key, read_before_revocation) is None
    assert sync_redis().get(scripts.GRANT_PREFIX + key.key_hash) == b"-"


def test_racing_cache_fill_does_not_cache_roles_read_before_a_membership_change(
    owner, org, teammate, django_capture_on_commit_callbacks
):
    read_before_removal = read_grant(teammate.key)
    assert org.pk in read_before_removal.org_roles
    with django_capture_on_commit_callbacks(execute=True):
        accounts.remove_member(owner.user, org, "tomas")
    fill(teammate.key, read_before_removal)
    assert sync_redis().get(scripts.GRANT_PREFIX + hash_key(teammate.key)) is None
    fresh = read_grant(teammate.key)
    assert org.pk not in fresh.org_roles
    assert fill(teammate.key, fresh) == fresh  # a fresh read is cached again
    assert sync_redis().get(scripts.GRANT_PREFIX + hash_key(teammate.key)) is not None


def test_session_grant_has_inference_scope_and_default_limits(owner, org, settings):
    grant = session_grant(owner.user)
    assert grant.key_id is None and grant.scopes == ("inference",)
    assert grant.rpm == settings.KEY_DEFAULT_RPM and grant.tpm == settings.KEY_DEFAULT_TPM
    assert grant.org_roles == {org.pk: Role.OWNER}
    assert grant.bucket == f"u{owner.user.pk}"


@pytest.fixture
def fresh_address() -> Any:
    key = scripts.AUTH_FAIL_PREFIX + "127.0.0.1"
    sync_redis().delete(key)
    yield
    sync_redis().delete(key)


def test_failed_authentications_are_throttled_before_any_database_lookup(
    live_portal, owner, settings, fresh_address
):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 5

    def models(key: str) -> httpx.Response:
        return httpx.get(f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {key}"})

    codes = [models(f"sk-wrong-{i}").status_code for i in range(5)]
    assert codes == [401] * 5
    throttled = models("sk-wrong-again")
    assert_openai_error(throttled, 429, "too_many_failed_authentications")
    assert throttled.headers["retry-after"] == "60"
    # Even a valid key not yet cached gets no database look-up from this address now.
    assert_openai_error(models(owner.key), 429, "too_many_failed_authentications")


@pytest.fixture
def engine() -> Any:
    yield from serve_fake_engine()


def test_unreachable_redis_fails_closed_unless_configured_open(
    transactional_db, owner, engine, tmp_path
):
    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    dead = f"redis://127.0.0.1:{free_port()}/0"
    body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {owner.key}"}
    with gateway_processes(tmp_path, count=1, REDIS_URL=dead) as (closed,):
        refused = httpx.post(f"{closed}/v1/chat/completions", headers=headers, json=body)
        assert_openai_error(refused, 503, "limits_unavailable")
        assert refused.headers["retry-after"]
    with gateway_processes(tmp_path, count=1, REDIS_URL=dead, GATEWAY_REDIS_FAILURE="open") as (
        tolerant,
    ):
        served = httpx.post(f"{tolerant}/v1/chat/completions", headers=headers, json=body)
        assert served.status_code == 200, served.text


@pytest.mark.django_db(transaction=True)
def test_requests_missing_the_memo_together_share_one_look_up(owner):
    from portal.services import keys

    def lookups() -> int:
        return int(sync_redis().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def twenty_at_once() -> list[Any]:
        keys._local_grants.clear()
        return list(await asyncio.gather(*(keys.resolve_grant(owner.key, "t") for _ in range(20))))

    asyncio.run(twenty_at_once())  # the grant is now cached in Redis
    before = lookups()
    grants = asyncio.run(twenty_at_once())
    assert lookups() - before == 1
    assert {g.user_id for g in grants} == {owner.user.pk}
