"""Per-key limits, budgets, scopes and allow-lists on the /v1 gateway, over real HTTP
against real Redis and PostgreSQL, with a fake OpenAI-compatible engine upstream."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest

from compute.agent.procs import wait_for
from portal.limits import duration, month
from portal.limits.scripts import budget_key
from portal.models import UserBudget
from portal.services.keys import sync_redis
from tests.factories import deployment
from tests.portal.fake_engine import serve_fake_engine
from tests.portal.gateways import add_replica
from tests.portal.test_gateway import assert_openai_error

RATE_HEADERS = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
}


@pytest.fixture
def engine() -> Any:
    yield from serve_fake_engine()


@pytest.fixture
def model(owner, engine):
    dep = deployment(owner.user, "pub")
    add_replica(dep.served_name, engine[0])
    return dep


def new_key(actor, **limits: Any) -> str:
    response = actor.client().post("/api/keys/", {"name": "t", **limits}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["key"]


def chat(url: str, key: str, **extra: Any) -> httpx.Response:
    body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hello there"}]}
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={**body, **extra},
        timeout=30,
    )


def budget_used(kind: str, owner_id: int, field: str) -> int:
    """A monthly budget counter once its request settled (just after the answer)."""
    key = budget_key(kind, owner_id, month())

    def settled() -> int | None:
        if any(sync_redis().zcard(k) for k in sync_redis().keys("openmaas:rl:*:conc")):
            return None  # not settled yet
        raw = sync_redis().hget(key, field)
        return None if raw is None else int(raw)

    return wait_for(settled, timeout_s=5, what="settlement", interval_s=0.02)


def assert_rate_headers(response: httpx.Response) -> None:
    assert set(response.headers) >= RATE_HEADERS, response.headers
    assert response.headers["x-request-id"]


def test_key_create_validates_and_lists_limits(owner, org, outsider):
    key = new_key(
        owner,
        scopes=["inference", "files:read"],
        allowed_models=["olivia/pub", "acme-lab/*"],
        rpm_limit=10,
        tpm_limit=1000,
        max_concurrent=2,
        organization="acme-lab",
    )
    listed = owner.client().get("/api/keys/").json()["results"]
    mine = next(k for k in listed if key.startswith(k["prefix"]))
    assert mine["scopes"] == ["files:read", "inference"]
    assert mine["allowed_models"] == ["acme-lab/*", "olivia/pub"]
    assert (mine["rpm_limit"], mine["tpm_limit"], mine["max_concurrent"]) == (10, 1000, 2)
    assert mine["organization"] == "acme-lab"
    defaults = next(k for k in listed if k["name"] == "olivia-key")
    assert defaults["rpm_limit"] is None and "inference" in defaults["scopes"]

    for bad in (
        {"scopes": ["root"]},
        {"scopes": []},
        {"allowed_models": ["no-slash"]},
        {"rpm_limit": 0},
        {"tpm_limit": -5},
        {"max_concurrent": "many"},
    ):
        response = owner.client().post("/api/keys/", {"name": "x", **bad}, format="json")
        assert response.status_code == 400, bad
    response = outsider.client().post(
        "/api/keys/", {"name": "x", "organization": "acme-lab"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_organization"


def test_success_carries_rate_headers_and_request_id(live_portal, model, owner):
    key = new_key(owner, rpm_limit=5, tpm_limit=10_000)
    response = chat(live_portal, key, max_tokens=3)
    assert response.status_code == 200, response.text
    assert_rate_headers(response)
    assert response.headers["x-ratelimit-limit-requests"] == "5"
    assert response.headers["x-ratelimit-remaining-requests"] == "4"
    assert response.headers["x-ratelimit-reset-requests"] == "12s"
    assert response.headers["x-ratelimit-limit-tokens"] == "10000"
    assert len(response.headers["x-request-id"]) == 32


def test_requests_per_minute_answers_429(live_portal, model, owner):
    key = new_key(owner, rpm_limit=3)
    assert [chat(live_portal, key).status_code for _ in range(3)] == [200, 200, 200]
    refused = chat(live_portal, key)
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert refused.json()["error"]["type"] == "requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert_rate_headers(refused)


def test_tokens_per_minute_answers_429_and_settles_to_real_usage(live_portal, model, owner):
    key = new_key(owner, tpm_limit=100)
    first = chat(live_portal, key, max_tokens=60)  # reserves ~64, uses 3 + 60
    assert first.status_code == 200, first.text
    refused = chat(live_portal, key, max_tokens=60)
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert refused.json()["error"]["type"] == "tokens"
    assert_rate_headers(refused)
    too_large = chat(live_portal, key, max_tokens=500)
    assert_openai_error(too_large, 429, "rate_limit_exceeded")
    assert "too large" in too_large.json()["error"]["message"]


def test_concurrent_requests_beyond_the_limit_answer_429(live_portal, model, owner):
    key = new_key(owner, max_concurrent=2)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {
                "model": "olivia/pub",
                "messages": [{"role": "user", "content": "hi"}],
                "user": "sleep:2",
            }
            calls = [
                client.post(
                    f"{live_portal}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json=body,
                )
                for _ in range(5)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    codes = asyncio.run(burst())
    assert sorted(codes) == [200, 200, 429, 429, 429]
    # The slots were released: the next request goes through.
    assert chat(live_portal, key).status_code == 200


def test_monthly_token_budget_answers_insufficient_quota(live_portal, model, owner):
    UserBudget.objects.create(user=owner.user, monthly_token_budget=50)
    key = new_key(owner)
    ok = chat(live_portal, key, max_tokens=5)
    assert ok.status_code == 200, ok.text
    # Settled (just after the answer) to the engine's count.
    assert budget_used("u", owner.user.pk, "tok") == ok.json()["usage"]["total_tokens"]
    refused = chat(live_portal, key, max_tokens=60)
    assert_openai_error(refused, 429, "insufficient_quota")
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) > 0
    assert_rate_headers(refused)


def test_organisation_spend_budget_answers_insufficient_quota(live_portal, model, owner, org):
    repo = model.model_version.repo
    repo.price_input_cny_per_m = Decimal("100000")  # 0.1 CNY per prompt token
    repo.price_output_cny_per_m = Decimal("200000")
    repo.save()
    org.monthly_spend_budget_cny = Decimal("2")
    org.save()
    key = new_key(owner, organization="acme-lab")
    assert chat(live_portal, key, max_tokens=2).status_code == 200  # 0.3 + 0.4 CNY
    assert budget_used("o", org.pk, "ucny") == 3 * 100_000 + 2 * 200_000
    refused = chat(live_portal, key, max_tokens=10)  # would cost more than what is left
    assert_openai_error(refused, 429, "insufficient_quota")
    assert "organisation" in refused.json()["error"]["message"]


def test_model_allow_list_and_scope_answer_403(live_portal, model, owner):
    deployment(owner.user, "other")
    allowed = new_key(owner, allowed_models=["olivia/other"])
    assert_openai_error(chat(live_portal, allowed), 403, "model_not_allowed", "model")
    listed = httpx.get(
        f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {allowed}"}
    ).json()
    assert [m["id"] for m in listed["data"]] == ["olivia/other"]

    files_only = new_key(owner, scopes=["files"])
    assert_openai_error(chat(live_portal, files_only), 403, "insufficient_scope")
    response = httpx.get(
        f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {files_only}"}
    )
    assert_openai_error(response, 403, "insufficient_scope")


def test_streams_report_usage_to_the_gateway_and_strip_it_for_the_client(
    live_portal, model, owner, engine
):
    plain = chat(live_portal, owner.key, stream=True, max_tokens=3)
    assert plain.status_code == 200
    assert '"usage": {' not in plain.text and plain.text.rstrip().endswith("data: [DONE]")
    assert engine[1].bodies[-1]["stream_options"] == {"include_usage": True}
    asked = chat(
        live_portal, owner.key, stream=True, max_tokens=3, stream_options={"include_usage": True}
    )
    assert '"usage": {"prompt_tokens": 3, "completion_tokens": 3' in asked.text


def test_reset_durations_use_openai_format():
    assert [duration(ms) for ms in (20, 999, 1000, 1500, 60_000, 360_000, 3_723_000)] == [
        "20ms",
        "999ms",
        "1s",
        "2s",
        "1m0s",
        "6m0s",
        "1h2m3s",
    ]


def test_concurrency_slot_of_a_dead_process_frees_itself(settings):
    """A process that reserved and died never settles; its lease runs out instead."""
    from portal.limits import RateLimited, reserve
    from portal.services.keys import KeyGrant

    settings.GATEWAY_CONCURRENCY_LEASE_S = 1
    grant = KeyGrant(10**9, 10**9, False, {}, None, max_concurrent=1)
    sync_redis().delete("openmaas:rl:k1000000000:conc")

    async def attempt(request_id: str) -> bool:
        try:
            await reserve(grant, request_id, 10, 0)
        except RateLimited:
            return False
        return True

    assert asyncio.run(attempt("dies-holding-it"))
    assert not asyncio.run(attempt("next"))
    assert wait_for(lambda: asyncio.run(attempt("later")), timeout_s=5, what="lease expiry")


def test_a_clients_next_request_sees_the_slot_its_last_one_freed(live_portal, model, owner):
    """Settlement happens after the answer, off the request's path, yet a client sending
    requests one after another on one connection never trips a limit of one at a time."""
    key = new_key(owner, max_concurrent=1)
    body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        codes = [
            client.post(f"{live_portal}/v1/chat/completions", json=body).status_code
            for _ in range(20)
        ]
    assert codes == [200] * 20


def test_budget_keys_turn_over_with_the_utc_month():
    from datetime import UTC, datetime

    from portal import limits
    from portal.services.keys import KeyGrant

    grant = KeyGrant(key_id=7, user_id=3, is_superuser=False, org_roles={}, expires_at=None)
    last_moment = datetime(2026, 1, 31, 23, 59, 59, 900_000, tzinfo=UTC).timestamp()
    assert limits.limit_keys(grant, last_moment)[2:] == [
        "openmaas:budget:u:3:202601",
        "openmaas:budget:o:0:202601",
    ]
    assert limits.limit_keys(grant, last_moment + 0.2) == [
        "openmaas:rl:k7",
        "openmaas:rl:k7:conc",
        "openmaas:budget:u:3:202602",
        "openmaas:budget:o:0:202602",
    ]
    assert limits.limit_keys(grant, last_moment)[2] == "openmaas:budget:u:3:202601"


def test_a_queued_command_that_cannot_be_packed_fails_its_write_not_later_replies(settings):
    """Replies are matched to waiters by position: a command missing from a write must
    fail the connection's waiters (and reconnect), never shift replies onto others."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from portal.limits.wire import Wire

    class Broken:
        def pack(self) -> bytes:
            raise ValueError("cannot pack")

    async def run() -> tuple[Any, Any, Any]:
        connection = Wire(settings.REDIS_URL)
        await connection.execute(("PING",))
        echo = asyncio.ensure_future(connection.execute(("ECHO", "before")))
        await asyncio.sleep(0)  # the ECHO is queued ahead of the broken command
        broken = connection.queue(Broken(), 0.0)
        assert broken is not None
        outcomes = await asyncio.gather(echo, broken, return_exceptions=True)
        return outcomes[0], outcomes[1], await connection.execute(("ECHO", "after"))

    echoed, broken, after = asyncio.run(run())
    assert isinstance(echoed, RedisConnectionError) and isinstance(broken, RedisConnectionError)
    assert after == [b"after"]


def test_a_command_queued_to_wait_goes_out_as_soon_as_something_hurries_it(settings):
    """The ledger queues a batch of usage events alone to wait for company; a settlement
    joining it hurries it (``Wire.hurry``), since a slot stays taken until it is sent."""
    import hiredis

    from portal.limits.wire import Wire

    class Ping:
        def pack(self) -> bytes:
            return hiredis.pack_command(("PING",))

    async def run() -> tuple[bool, Any]:
        connection = Wire(settings.REDIS_URL)
        await connection.execute(("PING",))
        waiting = connection.queue(Ping(), 60.0)
        assert waiting is not None
        await asyncio.sleep(0.2)
        sent_alone = waiting.done()
        connection.hurry(0.001)
        return sent_alone, await asyncio.wait_for(waiting, 5)

    sent_alone, reply = asyncio.run(run())
    assert not sent_alone
    assert reply == b"PONG"


def test_a_fine_tune_belongs_to_its_owners_namespace_in_allow_lists():
    from portal.models.keys import model_allowed, model_namespace

    name = "ft:openmaas/demo-tiny:olivia:support:ftjob-abc"
    assert model_namespace(name) == "olivia"
    assert model_namespace("openmaas/demo-tiny") == "openmaas"
    assert model_allowed(["olivia/*"], name)
    assert not model_allowed(["openmaas/*"], name)  # the base's owner does not own the tune
    assert model_allowed([name], name)


def test_which_keys_are_leased(settings):
    from portal.limits.leases import Terms, terms
    from portal.services.keys import KeyGrant

    def grant(**fields: Any) -> KeyGrant:
        limits = {"rpm": 60_000, "tpm": 6_000_000, "max_concurrent": 100, **fields}
        return KeyGrant(
            key_id=7, user_id=3, is_superuser=False, org_roles={}, expires_at=None, **limits
        )

    settings.GATEWAY_LEASE_SHARE = 600
    settings.GATEWAY_LEASE_MIN_REQUESTS = 8
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 256
    assert terms(grant()) == Terms(requests=100, tokens=10_000, slots=12)
    assert terms(grant(rpm=0, tpm=0, max_concurrent=0)) == Terms(0, 0, 0)  # unlimited
    assert terms(grant(max_concurrent=10_000)) == Terms(100, 10_000, 128)
    assert terms(grant(rpm=4_799)) is None  # a lease would be under 8 requests
    assert terms(grant(tpm=1_228_799)) is None  # ... under 8 × 256 tokens
    assert terms(grant(max_concurrent=15)) is None  # under 2 slots
    assert terms(grant(user_token_budget=10**9)) is None  # budgets: request by request
    assert terms(grant(org_spend_budget_ucny=5)) is not None  # no billing organisation
    assert terms(grant(org_id=4, org_spend_budget_ucny=5)) is None
    settings.GATEWAY_LEASE_SHARE = 0
    assert terms(grant()) is None


def test_a_large_lease_recomputes_its_rate_headers_every_hundredth_of_it():
    """Exact headers cost formatting on every request; a lease holding 50,000 requests
    refreshes them every 500 admissions (and after each top-up), a small one always."""
    from portal.limits.leases import Lease, Leases, Terms
    from portal.services.keys import KeyGrant

    def remaining(lease: Lease) -> int:
        return int(dict(lease.rate_headers())[b"x-ratelimit-remaining-requests"])

    grant = KeyGrant(
        key_id=7, user_id=3, is_superuser=False, org_roles={}, expires_at=None, rpm=3_000_000
    )
    lease = Lease(grant, Terms(requests=50_000, tokens=0, slots=0), Leases())
    lease.held, lease.requests, lease.redis_requests = True, 50_000, 2_900_000
    seen = []
    for _ in range(1002):
        assert lease.admit(0)
        seen.append(remaining(lease))
    assert seen[0] == 2_949_999 and seen[500] == 2_949_999
    assert seen[501] == 2_949_999 - 501 and seen[1002 - 1] == 2_949_999 - 501
    lease.headers_left = 0  # as a top-up does
    assert lease.admit(0) and remaining(lease) == 2_949_999 - 1002

    small = Lease(grant, Terms(requests=10, tokens=0, slots=0), Leases())
    small.held, small.requests = True, 10
    assert [small.admit(0) and remaining(small) for _ in range(3)] == [9, 8, 7]


def test_a_lease_hands_back_its_slots_and_reports_its_usage_when_quiet(
    live_portal, model, owner, settings
):
    """Leased requests are settled in the process; the usage reaches the monthly
    counters by the time the quiet key's lease is handed back."""
    settings.GATEWAY_LEASE_SHARE = 10
    settings.GATEWAY_LEASE_S = 0.5
    key = new_key(owner, rpm_limit=1000, tpm_limit=1_000_000, max_concurrent=64)
    answers = [chat(live_portal, key, max_tokens=3 + i) for i in range(5)]
    slots = [
        m for k in sync_redis().keys("openmaas:rl:*:conc") for m in sync_redis().zrange(k, 0, -1)
    ]
    assert len(slots) == 2 and all(b"#" in m for m in slots), slots  # the lease's, to begin
    assert [a.status_code for a in answers] == [200] * 5
    assert 990 <= int(answers[-1].headers["x-ratelimit-remaining-requests"]) < 1000
    total = sum(a.json()["usage"]["total_tokens"] for a in answers)
    # budget_used waits for the concurrency sets to empty: the lease's 8 slots go with it.
    assert budget_used("u", owner.user.pk, "tok") == total


def test_leased_answers_carry_each_rate_header_once_served_corked_or_plain(
    live_portal, model, owner, settings
):
    """The web process's protocol writes a leased request's rate headers into the head
    as lines (``portal.gateway.server``); plain httptools gets them as header pairs."""
    from tests.conftest import serving_portal

    settings.GATEWAY_LEASE_SHARE = 10
    key = new_key(owner, rpm_limit=1000, tpm_limit=1_000_000)
    with serving_portal(http="httptools") as plain:
        for url in (live_portal, plain):
            answers = [chat(url, key, max_tokens=2) for _ in range(3)]
            for answer in answers:
                assert answer.status_code == 200, answer.text
                for name in RATE_HEADERS:
                    assert len(answer.headers.get_list(name)) == 1, (url, name, answer.headers)
                assert answer.headers["x-ratelimit-limit-requests"] == "1000"
                assert answer.json()["usage"]["completion_tokens"] >= 1


def test_a_lease_spends_what_it_holds_then_sends_requests_to_redis_one_by_one(settings):
    """One process, 100 requests a minute, leases of 10: exactly the bucket's 100 are
    admitted (the last top-up is refused, the lease spends what it holds, and the rest
    get Redis' own verdict), and the lease's slots grow with the requests in flight."""
    from portal.limits import RateLimited, leases, reserve, settlement
    from portal.services.keys import KeyGrant

    settings.GATEWAY_LEASE_SHARE = 10
    settings.GATEWAY_LEASE_S = 30.0  # no tick during the test
    grant = KeyGrant(10**9 + 1, 10**9, False, {}, None, rpm=100, max_concurrent=80)
    bucket = "openmaas:rl:k1000000001"
    sync_redis().delete(bucket, bucket + ":conc")

    def leased_slots() -> int:
        return sum(b"#" in m for m in sync_redis().zrange(bucket + ":conc", 0, -1))

    async def run() -> tuple[list[int], int, list[str]]:
        held, slots, verdicts = [], [], []
        for i in range(110):
            try:
                reservation = await reserve(grant, f"r{i}", 10, 0)
            except RateLimited as refused:
                verdicts.append(refused.code)
                continue
            held.append(reservation)
            if i in (0, 2, 11):
                slots.append(leased_slots())
            if len(held) == 12:  # 12 in flight at most, then they end
                for done in held:
                    if settlement(done, 7, 0) is not None:
                        verdicts.append("exact")
                held.clear()
        for done in held:
            settlement(done, 7, 0)
        await leases.release_all()
        return slots, leased_slots(), verdicts

    slots, left, verdicts = asyncio.run(run())
    assert slots == [2, 4, 10]  # 2 to begin; a quarter over the peak; at most an eighth
    assert verdicts.count("rate_limit_exceeded") in (10, 9)  # 9 if a request refilled
    assert left == 0  # handed back
