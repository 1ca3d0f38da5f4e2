"""Moderation inline in the real gateway (uvicorn serving ``portal.asgi``): blocked input,
streamed and whole output, AIGC labels, repeat offenders, and the decisions reaching the
database through the governance stream's drain.

Planted output comes from a scripted upstream, ``tests.bench.stub_engine.serve_in_thread``
registered as the model's only replica: it streams a given text in given chunks, so a
violation can be split across chunk boundaries at will. The blocked-input test uses the
real CPU engine and reads its own request counter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from compute.agent.procs import wait_for
from compute.models import Deployment, Node, Replica, ReplicaStatus
from governance.inline import MASK, NOTICE
from governance.labels.implicit import from_json, verify_label
from governance.labels.text import text_sha256
from governance.models import ModerationDecision, Policy, Provenance, Suspension
from governance.services import events, snapshot
from portal.gateway import moderation
from portal.services.keys import sync_redis
from tests.bench.stub_engine import serve_in_thread
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME
from tests.factories import deployment, model_repo
from tests.portal.gateways import add_replica

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VIOLATION = "颠覆国家政权"  # A1_a in the starter lexicon: blocked both ways by default


@pytest.fixture(autouse=True)
def _fresh_governance() -> Iterator[None]:
    """No offender marks or counts from earlier tests; the gateway reloads its snapshot."""
    redis = sync_redis()
    redis.delete(snapshot.OFFENDERS_KEY, *redis.keys(moderation.VIOLATIONS_PREFIX + "*"))
    moderation.state.snapshot = None
    moderation.state.first = None
    yield
    redis.delete(snapshot.OFFENDERS_KEY)


def reload_gateway() -> None:
    """What services do after a policy change (bump), with the next request loading the
    new snapshot at once rather than within the second."""
    snapshot.bump()
    moderation.state.snapshot = None


@pytest.fixture
def scripted(owner) -> Iterator[tuple[str, Any]]:
    """The deployment ``olivia/pub`` served by a scripted stub: (served name, script)."""
    served = deployment(owner.user, "pub").served_name
    with serve_in_thread() as (url, script):
        add_replica(served, url)
        yield served, script


def post(url: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=60,
    )


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse(response: httpx.Response) -> list[dict[str, Any] | str]:
    """The data of each SSE event ("[DONE]" as a string)."""
    out: list[dict[str, Any] | str] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def content(chunks: list[dict[str, Any] | str]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if isinstance(c, dict) and c.get("choices")
    )


def drained(check: Any, what: str) -> Any:
    """Drain the governance stream until ``check()`` holds (the gateway sends its events
    just after the answer)."""

    def attempt() -> Any:
        events.drain(min_idle_ms=0)
        return check()

    return wait_for(attempt, timeout_s=10, what=what, interval_s=0.05)


def test_a_blocked_input_never_reaches_the_engine_and_a_clean_one_is_labelled(
    live_portal, owner, engine_url, engine_client
):
    repo = model_repo(owner.user, "tiny", "public")
    dep = Deployment.objects.create(model_version=repo.versions.get(), served_name=SERVED_NAME)
    node = Node.objects.create(name="n1", token_hash="f" * 64, status="ready")
    Replica.objects.create(
        deployment=dep, node=node, status=ReplicaStatus.READY, url=engine_url, secret=ENGINE_API_KEY
    )
    before = engine_client.get("/v1/engine/stats").json()["requests_total"]

    blocked = post(live_portal, owner.key, chat(SERVED_NAME, f"教我如何{VIOLATION}", max_tokens=4))
    assert blocked.status_code == 400, blocked.text
    assert blocked.json()["error"]["code"] == "content_policy_violation"
    assert engine_client.get("/v1/engine/stats").json()["requests_total"] == before

    clean = post(live_portal, owner.key, chat(SERVED_NAME, "hello", max_tokens=4, temperature=0))
    assert clean.status_code == 200, clean.text
    assert engine_client.get("/v1/engine/stats").json()["requests_total"] == before + 1
    answer = clean.json()
    label = answer["aigc"]
    text = answer["choices"][0]["message"]["content"]
    assert label["ProduceID"] == f"aigc-{clean.headers['x-request-id']}"
    assert verify_label(label, text_sha256(text), _key())
    assert from_json(clean.headers["x-aigc-label"]) == label

    rid = blocked.headers["x-request-id"]
    decision = drained(
        lambda: ModerationDecision.objects.filter(request_id=rid).first(), "the decision row"
    )
    assert (decision.direction, decision.action) == ("input", "block")
    assert decision.user_id == owner.user.pk
    assert "A1_a" in decision.categories and VIOLATION in decision.excerpt
    provenance = drained(
        lambda: Provenance.objects.filter(content_id=label["ProduceID"]).first(), "provenance"
    )
    assert provenance.text_sha256 == text_sha256(text) and provenance.label == label


def _key() -> str:
    return moderation.label_key()


def test_a_violation_split_across_stream_chunks_ends_the_stream_with_content_filter(
    live_portal, owner, scripted
):
    served, script = scripted
    script.chunks = ["好的，", "我们要颠", "覆国", "家", "政权", "，然后", "结束。"]
    response = post(live_portal, owner.key, chat(served, stream=True))
    assert response.status_code == 200
    chunks = sse(response)
    assert chunks[-1] == "[DONE]"
    final = chunks[-2]
    assert isinstance(final, dict) and final["choices"][0]["finish_reason"] == "content_filter"
    assert "颠覆" not in content(chunks)  # the default policy holds text back: none of it left
    assert not any(isinstance(c, dict) and "aigc" in c for c in chunks)
    rid = response.headers["x-request-id"]
    decision = drained(
        lambda: ModerationDecision.objects.filter(request_id=rid, direction="output").first(),
        "the output decision",
    )
    assert decision.action == "block" and "A1_a" in decision.categories


def test_redaction_masks_a_phone_number_split_across_chunks_and_the_label_verifies(
    live_portal, owner, scripted
):
    served, script = scripted
    script.chunks = ["请拨打", "138", "1234", "5678", "联系我们。", *["这是一段普通的回答。"] * 10]
    response = post(live_portal, owner.key, chat(served, stream=True))
    chunks = sse(response)
    text = content(chunks)
    assert "13812345678" not in text and "请拨打" + MASK * 11 + "联系我们" in text
    assert text.endswith("普通的回答。") and chunks[-1] == "[DONE]"
    aigc = chunks[-2]
    assert isinstance(aigc, dict) and aigc["choices"] == []
    assert aigc["aigc"]["ProduceID"] == response.headers["x-aigc-content-id"]
    assert verify_label(aigc["aigc"], text_sha256(text), _key())


def test_a_blocked_non_streamed_answer_is_replaced_by_the_notice(live_portal, owner, scripted):
    served, script = scripted
    script.chunks = ["这里是", VIOLATION, "的方法"]
    blocked = {"source": "gateway", "direction": "output", "action": "block"}
    before = REGISTRY.get_sample_value("openmaas_moderation_decisions_total", blocked) or 0
    response = post(live_portal, owner.key, chat(served))
    assert response.status_code == 200
    after = REGISTRY.get_sample_value("openmaas_moderation_decisions_total", blocked)
    assert after == before + 1  # counted in Prometheus as well as logged
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == NOTICE
    assert choice["finish_reason"] == "content_filter"
    assert "aigc" not in response.json() and "x-aigc-label" not in response.headers


def test_the_openai_sdk_streams_through_the_filter_with_the_policys_explicit_label(
    live_portal, owner, scripted
):
    served, script = scripted
    policy = Policy(name="labels", served_name=served, labels={"explicit": "end"})
    policy.set_owner(owner.user)
    policy.save()
    reload_gateway()
    script.chunks = ["Hello", " from", " the", " scripted", " stub."]
    client = openai.OpenAI(base_url=f"{live_portal}/v1", api_key=owner.key)
    stream = client.chat.completions.create(
        model=served, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    parts, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == "Hello from the scripted stub.\n人工智能生成"
    assert finish == "stop"


def test_repeat_offenders_are_throttled_then_suspended(live_portal, owner, outsider, scripted):
    served, _script = scripted
    policy = Policy(
        name="strict",
        served_name=served,
        offenders={"throttle_after": 1, "throttle_rpm": 2, "suspend_after": 3, "suspend_s": 600},
    )
    policy.set_owner(owner.user)
    policy.save()
    reload_gateway()

    def violate(actor: Any, count: int) -> None:
        response = post(live_portal, actor.key, chat(served, VIOLATION))
        assert response.status_code == 400, response.text
        key = moderation.VIOLATIONS_PREFIX + str(actor.user.pk)
        wait_for(lambda: int(sync_redis().get(key) or 0) == count, timeout_s=5, what="count")

    def marked(actor: Any, level: str) -> None:
        def found() -> bool:
            raw = sync_redis().hget(snapshot.OFFENDERS_KEY, str(actor.user.pk))
            return bool(raw) and json.loads(raw)["level"] == level

        wait_for(found, timeout_s=5, what=f"{level} mark")

    # The outsider: one violation throttles them to 2 requests a minute.
    violate(outsider, 1)
    marked(outsider, "throttled")
    assert post(live_portal, outsider.key, chat(served)).status_code == 200
    assert post(live_portal, outsider.key, chat(served)).status_code == 200
    throttled = post(live_portal, outsider.key, chat(served))
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"

    # The owner: throttled after one, suspended after three.
    violate(owner, 1)
    violate(owner, 2)
    violate(owner, 3)
    marked(owner, "suspended")
    refused = post(live_portal, owner.key, chat(served))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_suspended"

    rows = drained(
        lambda: (
            list(Suspension.objects.values_list("user_id", "level"))
            if Suspension.objects.count() >= 3
            else None
        ),
        "suspension rows",
    )
    assert (outsider.user.pk, "throttled") in rows
    assert (owner.user.pk, "suspended") in rows


def test_a_blocked_answer_reaches_the_review_queue_and_the_admins_decision_the_audit_log(
    live_portal, owner, admin, outsider, scripted
):
    served, script = scripted
    script.chunks = ["好的，", "我们要颠", "覆国家政权", "。"]
    response = post(live_portal, owner.key, chat(served, stream=True))
    rid = response.headers["x-request-id"]
    decision = drained(
        lambda: ModerationDecision.objects.filter(request_id=rid, direction="output").first(),
        "the output decision",
    )
    # The owner's own traffic (no organisation): a platform item, for staff.
    queue = admin.client().get("/api/governance/review/").json()["results"]
    (item,) = [i for i in queue if i["decision_id"] == decision.decision_id]
    assert item["status"] == "pending" and item["direction"] == "output"
    assert outsider.client().get("/api/governance/review/").json()["results"] == []
    detail = f"/api/governance/review/{item['item_id']}/"
    assert outsider.client().get(detail).status_code == 404

    decided = admin.client().post(
        detail + "decide/", {"decision": "remove", "notes": "confirmed"}, format="json"
    )
    assert decided.status_code == 200, decided.content
    assert decided.json()["status"] == "removed"
    audit = admin.client().get("/api/governance/audit/", {"target": item["item_id"]}).json()
    entries = [(e["action"], e["data"].get("notes")) for e in audit["results"]]
    assert ("review.decide", "confirmed") in entries
    assert admin.client().get("/api/governance/audit/verify/").json()["ok"] is True


def test_the_usage_chunk_stays_last_after_the_label_chunk(live_portal, owner, scripted):
    served, script = scripted
    script.chunks = ["A plain", " answer."]
    body = chat(served, stream=True, stream_options={"include_usage": True})
    chunks = sse(post(live_portal, owner.key, body))
    assert chunks[-1] == "[DONE]"
    usage, label = chunks[-2], chunks[-3]
    assert isinstance(usage, dict) and usage["usage"]["completion_tokens"] > 0
    assert isinstance(label, dict) and "aigc" in label and label["choices"] == []


# The classifier (a dear stage) catches this; the starter lexicon and patterns do not.
OFFENSIVE = "真恶心啊那个男的"


def classifier_loaded(url: str, key: str, served: str) -> None:
    """A first answer (once the gateway's routes have the new replicas) loads its
    governance snapshot; the classifier joins in the background (the cheap stages serve
    until then)."""
    wait_for(lambda: post(url, key, chat(served)).status_code == 200, timeout_s=30, what="a route")
    wait_for(
        lambda: moderation.state.guard is not None and bool(moderation.state.guard.dear),
        timeout_s=60,
        what="the gateway's classifier",
    )


def test_concurrent_answers_checked_by_one_classifier_pass_keep_their_own_verdicts(
    live_portal, owner
):
    """Non-streamed answers of concurrent requests are scored together by the
    classifier (one pass per turn of the gateway's event loop): each answer still gets
    its own verdict, the offensive ones replaced by the notice, the clean ones labelled."""
    served = {
        "clean": deployment(owner.user, "clean").served_name,
        "rude": deployment(owner.user, "rude").served_name,
    }
    with (
        serve_in_thread(["今天天气", "很好。"]) as (clean_url, _),
        serve_in_thread([OFFENSIVE]) as (rude_url, _),
    ):
        add_replica(served["clean"], clean_url)
        add_replica(served["rude"], rude_url)
        classifier_loaded(live_portal, owner.key, served["clean"])

        async def ask_all() -> list[tuple[str, httpx.Response]]:
            headers = {"Authorization": f"Bearer {owner.key}"}
            async with httpx.AsyncClient(base_url=live_portal, headers=headers) as client:
                kinds = ["clean", "rude"] * 6
                answers = await asyncio.gather(
                    *(
                        client.post("/v1/chat/completions", json=chat(served[k]), timeout=60)
                        for k in kinds
                    )
                )
            return list(zip(kinds, answers, strict=True))

        for kind, response in asyncio.run(ask_all()):
            assert response.status_code == 200, response.text
            choice = response.json()["choices"][0]
            if kind == "rude":
                assert choice["message"]["content"] == NOTICE
                assert choice["finish_reason"] == "content_filter"
            else:
                assert choice["message"]["content"] == "今天天气很好。"
                assert "aigc" in response.json()


def test_a_streamed_answer_the_classifier_finds_offensive_is_flagged_after_it_is_sent(
    live_portal, owner, scripted
):
    served, script = scripted
    classifier_loaded(live_portal, owner.key, served)
    script.chunks = ["真恶心", "啊那个", "男的"]
    response = post(live_portal, owner.key, chat(served, stream=True))
    assert content(sse(response)) == OFFENSIVE  # out before the classifier could judge it
    rid = response.headers["x-request-id"]
    decision = drained(
        lambda: ModerationDecision.objects.filter(request_id=rid, direction="output").first(),
        "the deferred output decision",
    )
    assert decision.action == "flag"
    assert any(r["checker"] == "classifier" for r in decision.results)


def test_the_dear_stages_of_texts_queued_in_one_loop_turn_run_as_one_batch():
    """Unit level: many callers in one turn of the event loop → one ``check_many`` call,
    each caller given its own texts' results in order."""
    from governance.inline import Guard
    from governance.moderation.pipeline import Pipeline, default_pipeline, load_classifier

    class Counted:
        """The real classifier, counting its batched calls."""

        name, cost = "classifier", 10

        def __init__(self, inner: Any) -> None:
            self.inner, self.calls = inner, []

        def check(self, text: str) -> Any:
            return self.check_many([text])[0]

        def check_many(self, texts: Any) -> Any:
            self.calls.append(len(list(texts)))
            return self.inner.check_many(texts)

    counted = Counted(load_classifier())
    guard = Guard(Pipeline([*default_pipeline(classifier=False).checkers, counted]))
    texts = [[OFFENSIVE], ["今天天气很好。", OFFENSIVE], ["hello"]]

    async def run() -> list[Any]:
        batch = moderation.DearStages()
        return await asyncio.gather(
            *(batch.results(guard, group, hurry=i == 0) for i, group in enumerate(texts))
        )

    results = asyncio.run(run())
    assert counted.calls == [4]
    offensive = [[r["classifier"].detail["offensive"] > 0.5 for r in group] for group in results]
    assert offensive == [[True], [False, True], [False]]
