"""The gateway's half of usage metering: every /v1 inference request of a known user
becomes exactly one UsageEvent on the Redis stream, with the engine's own token counts,
whatever its outcome."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from compute.agent.procs import wait_for
from compute.metering import PACKED, ROW, STREAM, UsageEvent
from compute.models import Deployment
from portal.models import APIKey
from portal.models.keys import hash_key
from portal.services.keys import sync_redis
from tests.compute.conftest import ENGINE_API_KEY
from tests.factories import deployment, model_repo
from tests.portal.fake_engine import serve_fake_engine
from tests.portal.gateways import add_replica
from tests.portal.test_limits import new_key


def stream_events() -> list[UsageEvent]:
    """Every event on the usage stream (an entry holds a batch of them)."""
    return [
        event
        for _, fields in sync_redis().xrange(STREAM, "-", "+")
        for event in UsageEvent.decode_all(fields)
    ]


def events_for(request_ids: list[str]) -> dict[str, UsageEvent]:
    """The stream's events of these requests, once all are there (they follow the answer)."""

    def read() -> dict[str, UsageEvent] | None:
        found = {}
        for event in stream_events():
            if event.request_id in request_ids:
                assert event.request_id not in found, "one event per request"
                found[event.request_id] = event
        return found if len(found) == len(request_ids) else None

    return wait_for(read, timeout_s=10, what="usage events", interval_s=0.05)


def stream_usage(text: str) -> dict[str, int] | None:
    """The usage chunk of an SSE answer, if the client received one."""
    for line in text.splitlines():
        if line.startswith("data: {") and '"usage": {' in line.replace('"usage":{', '"usage": {'):
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return usage
    return None


def test_streamed_and_plain_requests_give_one_event_each_with_the_engines_counts(
    live_portal, owner, engine_url
):
    repo = model_repo(owner.user, "tiny")
    repo.price_input_cny_per_m, repo.price_output_cny_per_m = Decimal("2"), Decimal("8")
    repo.save()
    Deployment.objects.create(model_version=repo.versions.get(), served_name="tiny-llama")
    replica = add_replica("tiny-llama", engine_url, secret=ENGINE_API_KEY)
    key = new_key(owner)
    key_id = APIKey.objects.get(key_hash=hash_key(key)).pk
    headers = {"Authorization": f"Bearer {key}"}
    chat = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "你好, tell me a story"}],
        "max_tokens": 6,
        "temperature": 0,
    }
    completion = {"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 5}
    calls = [
        ("chat/completions", chat),
        ("chat/completions", {**chat, "stream": True, "stream_options": {"include_usage": True}}),
        ("chat/completions", {**chat, "stream": True}),
        ("completions", completion),
        ("completions", {**completion, "stream": True}),
    ]
    seen: dict[str, dict[str, int] | None] = {}
    for path, body in calls:
        response = httpx.post(f"{live_portal}/v1/{path}", headers=headers, json=body, timeout=60)
        assert response.status_code == 200, response.text
        seen[response.headers["x-request-id"]] = (
            stream_usage(response.text) if body.get("stream") else response.json()["usage"]
        )
    ids = list(seen)
    plain_chat, asked, unasked, plain_completion, streamed_completion = ids
    assert seen[unasked] is None and seen[streamed_completion] is None  # stripped
    # Greedy decoding of the same prompt: the stripped streams used what the others did.
    seen[unasked], seen[streamed_completion] = seen[plain_chat], seen[plain_completion]

    events = events_for(ids)
    for rid in ids:
        event, usage = events[rid], seen[rid]
        assert usage is not None
        assert (event.prompt_tokens, event.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert event.status == 200 and event.error_code == ""
        assert (event.user_id, event.key_id, event.model) == (owner.user.pk, key_id, "tiny-llama")
        assert (event.replica_id, event.node_id) == (replica.pk, replica.node_id)
        assert event.model_version_id == repo.versions.get().pk
        expected = (usage["prompt_tokens"] * 2 + usage["completion_tokens"] * 8) / Decimal(10**6)
        assert Decimal(event.cost_cny) == expected
        assert event.latency_ms > 0
    assert events[asked].stream and events[asked].ttft_ms is not None
    assert not events[plain_chat].stream and events[plain_chat].ttft_ms is None
    assert sum(e.prompt_tokens + e.completion_tokens for e in events.values()) == sum(
        u["total_tokens"] for u in seen.values() if u
    )


@pytest.fixture
def engine() -> Any:
    yield from serve_fake_engine()


def test_failed_requests_are_recorded_and_unknown_callers_are_not(live_portal, owner, engine):
    served = deployment(owner.user, "pub")
    deployment(owner.user, "idle")  # no replica
    add_replica(served.served_name, engine[0])
    key = new_key(owner, rpm_limit=3)  # engine_error, no_replica and fine pass
    headers = {"Authorization": f"Bearer {key}"}
    ok = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]}

    def post(body: Any, auth: dict[str, str] = headers) -> httpx.Response:
        return httpx.post(f"{live_portal}/v1/chat/completions", headers=auth, json=body)

    outcomes = {
        "engine_error": post({**ok, "user": "fail:500"}),
        "no_replica": post({**ok, "model": "olivia/idle"}),
        "bad_body": post({"model": "olivia/pub", "messages": "hi"}),
        "fine": post(ok),
        "rate_limited": post(ok),
    }
    assert [r.status_code for r in outcomes.values()] == [500, 503, 400, 200, 429]
    stranger = post(ok, {"Authorization": "Bearer sk-nobody"})
    assert stranger.status_code == 401

    events = events_for([r.headers["x-request-id"] for r in outcomes.values()])
    by_name = {name: events[r.headers["x-request-id"]] for name, r in outcomes.items()}
    assert (by_name["engine_error"].status, by_name["engine_error"].error_code) == (500, "boom")
    assert by_name["engine_error"].replica_id is not None
    assert by_name["no_replica"].status == 503 and by_name["no_replica"].replica_id is None
    assert by_name["no_replica"].error_code == "no_replica_ready"
    assert by_name["bad_body"].status == 400
    assert by_name["rate_limited"].error_code == "rate_limit_exceeded"
    assert by_name["fine"].prompt_tokens == 2 and by_name["fine"].completion_tokens == 5
    recorded = [event.request_id for event in stream_events()]
    assert stranger.headers["x-request-id"] not in recorded


def test_a_replica_dying_mid_answer_is_a_502_or_an_error_event_and_is_metered(
    live_portal, owner, engine
):
    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    key = new_key(owner)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}], "user": "die"}
    url = f"{live_portal}/v1/chat/completions"

    plain = httpx.post(url, headers=headers, json=body)
    assert plain.status_code == 502
    assert plain.json()["error"]["code"] == "replica_failed"
    streamed = httpx.post(url, headers=headers, json={**body, "stream": True})
    assert streamed.status_code == 200  # the answer had begun: it ends with an error event
    events = [e for e in streamed.text.split("\n\n") if e.startswith("data: ")]
    assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == "a"
    assert json.loads(events[-1][6:])["error"]["code"] == "replica_failed"
    # The replica stays routed: its next answer comes through.
    fine = httpx.post(url, headers=headers, json={**body, "user": ""})
    assert fine.status_code == 200, fine.text

    recorded = events_for([r.headers["x-request-id"] for r in (plain, streamed)])
    assert {(e.status, e.error_code) for e in recorded.values()} == {
        (502, "replica_failed"),
        (200, "replica_failed"),
    }


def test_a_client_hanging_up_mid_body_is_metered_quietly(live_portal, owner, engine, caplog):
    """A request whose client goes away before its body arrived is recorded as 499
    ``client_disconnected``, and is no server error in the logs."""
    import socket
    from urllib.parse import urlsplit

    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    key = new_key(owner)
    address = urlsplit(live_portal)
    before = {event.request_id for event in stream_events()}
    with socket.create_connection((address.hostname, address.port)) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"model": "olivia/pub", '
        )

    def gone() -> UsageEvent | None:
        for event in stream_events():
            if event.request_id not in before:
                return event
        return None

    event = wait_for(gone, timeout_s=10, what="the hung-up request's usage event")
    assert (event.status, event.error_code) == (499, "client_disconnected")
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_metering_can_be_switched_off(live_portal, owner, engine, settings):
    settings.GATEWAY_METERING = False
    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    body = {"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(
        f"{live_portal}/v1/chat/completions",
        headers={"Authorization": f"Bearer {owner.key}"},
        json=body,
    )
    assert response.status_code == 200
    settings.GATEWAY_METERING = True
    marker = httpx.post(
        f"{live_portal}/v1/chat/completions",
        headers={"Authorization": f"Bearer {owner.key}"},
        json=body,
    )
    events_for([marker.headers["x-request-id"]])  # published after the first one would be
    recorded = [event.request_id for event in stream_events()]
    assert response.headers["x-request-id"] not in recorded


def test_a_packed_event_reads_back_as_the_same_event():
    event = UsageEvent(
        "r", 1.5, None, 3, 4, "m", None, 5, 6, "chat", True, 200, "", 1, 2, 3.25, None, "0.01"
    )
    assert UsageEvent.decode({PACKED.encode(): event.pack().encode()}) == event
    assert UsageEvent.decode(event.encode()) == event


def test_a_burst_of_concurrent_requests_gives_one_event_each_and_exact_settlements(
    live_portal, owner, engine
):
    """Requests finishing together are settled and published in shared batches: each
    still gets exactly one event, and the budgets end at exactly the engine's usage."""
    from tests.portal.test_limits import budget_used

    repo = deployment(owner.user, "pub").model_version.repo
    repo.price_input_cny_per_m, repo.price_output_cny_per_m = Decimal("3"), Decimal("7")
    repo.save()
    add_replica("olivia/pub", engine[0])
    key = new_key(owner, rpm_limit=10_000, tpm_limit=1_000_000, max_concurrent=500)
    count = 60

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(
                    f"{live_portal}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "model": "olivia/pub",
                        "messages": [{"role": "user", "content": "one two three"}],
                        "max_tokens": 1 + i % 7,
                        "stream": i % 3 == 0,
                    },
                )
                for i in range(count)
            ]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * count
    events = events_for([r.headers["x-request-id"] for r in responses])
    assert len(events) == count
    prompt = sum(e.prompt_tokens for e in events.values())
    completion = sum(e.completion_tokens for e in events.values())
    assert completion == sum(1 + i % 7 for i in range(count))
    assert budget_used("u", owner.user.pk, "tok") == prompt + completion
    assert budget_used("u", owner.user.pk, "ucny") == prompt * 3 + completion * 7


def test_settlement_and_usage_survive_redis_forgetting_the_scripts(live_portal, owner, engine):
    """After a Redis restart (its scripts gone) the first settlement is retried once the
    script is loaded again: the slot is freed, the budget is exact, the event is there."""
    from tests.portal.test_limits import budget_used

    add_replica(deployment(owner.user, "pub").served_name, engine[0])
    key = new_key(owner, max_concurrent=1)
    sync_redis().script_flush()
    response = httpx.post(
        f"{live_portal}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "olivia/pub", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    event = events_for([response.headers["x-request-id"]])[response.headers["x-request-id"]]
    used = event.prompt_tokens + event.completion_tokens
    assert used > 0 and budget_used("u", owner.user.pk, "tok") == used


def test_usage_recorded_just_before_shutdown_is_sent_by_the_drain():
    """The lifespan shutdown drains the ledger before closing Redis: nothing queued is lost."""
    from portal.gateway import ledger

    row = (1.5, None, 3, 4, "m", None, 5, 6, "chat", False, 200, "", 1, 2, 3.0, None, None, None)
    rows = [(f"drain-{i}", *row) for i in range(5)]
    assert len(rows[0]) == len(ROW)

    async def stop_right_after() -> None:
        for row in rows:
            ledger.record(None, row)
        await ledger.drain()  # then the loop ends: whatever was not sent is gone

    asyncio.run(stop_right_after())
    recorded = [event.request_id for event in stream_events()]
    assert [f"drain-{i}" for i in range(5)] == [r for r in recorded if r.startswith("drain-")]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "stream": true}',
        b' {"model": "m", "stream": true}',
        '{"model": "模型", "stream": true}'.encode("utf-8-sig"),
        json.dumps({"model": "m", "stream": True}).encode("utf-16"),
        b'{"model": "m", "stream": true, "stream_options": {"x": 1}}',
        b'{"model": "m", "stream": true, "stream_options": null}',
    ],
)
def test_a_stream_asks_the_engine_for_usage_whatever_the_body_looks_like(body):
    from portal.gateway.exchange import Exchange

    async def nowhere(message: dict[str, Any]) -> None:
        pass

    payload = json.loads(body)
    forwarded = json.loads(Exchange(nowhere).ask_for_usage(dict(payload), body))
    assert forwarded["stream_options"]["include_usage"] is True
    assert {k: v for k, v in forwarded.items() if k != "stream_options"} == {
        k: v for k, v in payload.items() if k != "stream_options"
    }


def _event(
    choices: list[Any], usage: Any, compact: bool = False, usage_first: bool = False
) -> bytes:
    chunk: dict[str, Any] = {"object": "chat.completion.chunk"}
    chunk.update(
        {"usage": usage, "choices": choices}
        if usage_first
        else {"choices": choices, "usage": usage}
    )
    separators = (",", ":") if compact else (", ", ": ")
    return b"data: " + json.dumps(chunk, separators=separators).encode() + b"\n\n"


@pytest.mark.parametrize("split", [1, 7, 64, 10_000])
@pytest.mark.parametrize("client_asked", [False, True])
@pytest.mark.parametrize(
    "shape", ["spaced", "compact", "usage first", "prompt last", "usage in a content chunk"]
)
def test_the_stream_tap_reads_the_last_usage_and_drops_only_the_chunk_it_asked_for(
    split, client_asked, shape
):
    """OpenAI-style engines send ``"usage": null`` in every chunk and the counts in a last
    chunk with no choices; the tap takes those counts however the bytes arrive and however
    the JSON is written, and drops that chunk only when the client did not ask for it (a
    content chunk that carries counts stays)."""
    from portal.gateway.exchange import Exchange, StreamTap

    async def nowhere(message: dict[str, Any]) -> None:
        pass

    style = {"compact": shape == "compact", "usage_first": shape == "usage first"}
    counts = {"prompt_tokens": 12, "total_tokens": 14, "completion_tokens": 2}
    if shape == "prompt last":
        counts = {"completion_tokens": 2, "total_tokens": 14, "prompt_tokens": 12}
    content = [
        _event([{"index": 0, "delta": {"role": "assistant", "content": ""}}], None, **style),
        _event([{"index": 0, "delta": {"content": "你好"}}], None, **style),
        _event(
            [{"index": 0, "delta": {"content": "!"}}],
            {"prompt_tokens": 1, "completion_tokens": 1},
            **style,
        ),
    ]
    if shape == "usage in a content chunk":  # the counts ride on the last content chunk
        content[-1] = _event([{"index": 0, "delta": {"content": "!"}}], counts, **style)
        usage = b""
    else:
        usage = _event([], counts, **style)
    done = b"data: [DONE]\n\n"
    stream = b"".join(content) + usage + done
    ex = Exchange(nowhere)
    ex.client_usage = client_asked
    tap = StreamTap(ex)
    out = b"".join(tap.feed(stream[i : i + split]) for i in range(0, len(stream), split))
    out += tap.rest()
    assert ex.usage == (12, 2)
    assert ex.content_events == 2 and ex.ttft is not None
    assert out == (stream if client_asked else b"".join(content) + done)
