"""OpenAI's ``/v1/moderations``: the official SDK over real HTTP, the input shapes, the
limits, authentication and scopes, and errors in OpenAI's shape (never a 500); the
platform's governance configuration (staff lexicon and allow-list edits) reaching it
within the request after their commit, the pipeline rebuilt only then, Redis down, and
its results counted in Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
import redis
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rest_framework.test import APIClient

from compute.agent.procs import free_port, wait_for
from governance.moderation import classifier
from governance.moderation.pipeline import Pipeline
from governance.moderation.taxonomy import OPENAI_CATEGORIES, RISKS
from governance.services import lists, snapshot
from governance.v1 import LivePipeline, build_pipeline
from portal.services.keys import create_api_key, revoke_api_key, sync_redis

URL = "/v1/moderations"
OFFENSIVE = "河南人都是骗子，偷井盖的"
HARMLESS = "今天天气不错，我们去公园散步吧"
# A made-up gang name only the staff's lexicon knows, and its band the allow-list excuses.
TERM = "紫鲸帮"
CATEGORY = "A1_d"
ALLOWED = "紫鲸帮乐队"
IN_BAND = "周末和紫鲸帮乐队一起排练"
ALONE = "紫鲸帮的名单在这里"
STAFF_TERMS = [{"text": TERM, "category": CATEGORY}]


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier() -> None:
    """Train or load the shipped classifier once, outside any request."""
    classifier.default_model()


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Iterator[None]:
    """Each test's pipeline is built from its own database: resetting the database moves
    no version, so the tests do what every committed change does (as in production)."""
    snapshot.bump()
    yield
    snapshot.bump()


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=60)


def post(client: APIClient, body: Any) -> Any:
    return client.post(URL, body, format="json")


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


# --- the official SDK over real HTTP --------------------------------------------------


def test_sdk_moderates_a_batch_with_openai_and_platform_categories(
    live_portal: str, owner: Any
) -> None:
    # when the SDK sends two texts
    response = sdk(live_portal, owner.key).moderations.create(input=[OFFENSIVE, HARMLESS])
    # then there is one result per text in OpenAI's shape, plus the platform's categories
    assert response.id.startswith("modr-")
    assert response.model == "openmaas-moderation-1"
    offensive, harmless = response.results
    assert offensive.flagged and not harmless.flagged
    raw = offensive.model_dump(by_alias=True)
    assert set(raw["categories"]) == set(OPENAI_CATEGORIES)
    assert raw["category_scores"]["hate"] >= 0.5 and raw["categories"]["hate"]
    assert raw["category_applied_input_types"]["hate"] == ["text"]
    extra = offensive.model_extra or {}
    assert set(RISKS) <= set(extra["platform_category_scores"])
    assert extra["platform_categories"]["A2_d"] is True
    assert extra["platform_category_scores"]["A2_d"] >= 0.5
    assert harmless.category_scores.hate < 0.5


def test_sdk_accepts_a_single_string_and_openais_model_names(live_portal: str, owner: Any) -> None:
    client = sdk(live_portal, owner.key)
    response = client.moderations.create(input=HARMLESS, model="omni-moderation-latest")
    assert len(response.results) == 1 and not response.results[0].flagged
    assert response.model == "openmaas-moderation-1"


def test_sdk_text_parts_are_one_input(live_portal: str, owner: Any) -> None:
    parts: Any = [{"type": "text", "text": "河南人"}, {"type": "text", "text": "都是骗子"}]
    response = sdk(live_portal, owner.key).moderations.create(input=parts)
    assert len(response.results) == 1


def test_sdk_image_parts_are_refused_with_a_clear_400(live_portal: str, owner: Any) -> None:
    parts: Any = [
        {"type": "text", "text": HARMLESS},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live_portal, owner.key).moderations.create(input=parts)
    assert caught.value.code == "unsupported_input_type"
    assert "text only" in caught.value.message and "input[1]" in caught.value.message


def test_revoked_and_expired_keys_get_401(live_portal: str, owner: Any) -> None:
    revoked, revoked_raw = create_api_key(owner.user, name="revoked")
    revoke_api_key(owner.user, revoked.pk)
    _, expired_raw = create_api_key(
        owner.user, name="expired", expires_at=timezone.now() - timedelta(minutes=1)
    )
    for raw in (revoked_raw, expired_raw, "sk-not-a-key"):
        with pytest.raises(openai.AuthenticationError):
            sdk(live_portal, raw).moderations.create(input=HARMLESS)


# --- input shapes and limits ----------------------------------------------------------


def test_missing_key_is_401_in_openai_shape(anon: APIClient) -> None:
    response = post(anon, {"input": HARMLESS})
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_api_key"


def test_key_without_the_moderation_scope_is_403(owner: Any) -> None:
    _, raw = create_api_key(owner.user, name="files-only", scopes=["files"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = post(client, {"input": HARMLESS})
    assert response.status_code == 403
    assert error_of(response)["code"] == "insufficient_scope"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_parameter", "input"),
        ({"input": None}, "missing_required_parameter", "input"),
        ({"input": 42}, "invalid_request", "input"),
        ({"input": []}, "invalid_request", "input"),
        ({"input": ["ok", 3]}, "invalid_request", "input"),
        ({"input": [{"type": "text", "text": "a"}, "b"]}, "invalid_request", "input"),
        ({"input": [{"type": "text"}]}, "invalid_request", "input[0]"),
        ({"input": [{"type": "audio", "text": "a"}]}, "invalid_request", "input[0]"),
        ({"input": [{"type": "image_url"}]}, "unsupported_input_type", "input[0]"),
        ({"input": "a", "stream": True}, "invalid_request", "stream"),
        ({"input": "a", "model": 7}, "invalid_request", "model"),
        (["a"], "invalid_request", None),
        ("a", "invalid_request", None),
    ],
)
def test_malformed_bodies_are_400_with_the_offending_param(
    owner: Any, body: Any, code: str, param: str | None
) -> None:
    response = post(owner.client(), body)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(owner: Any) -> None:
    response = post(owner.client(), {"input": "a", "model": "gpt-4o"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


def test_body_that_is_not_json_is_400(owner: Any) -> None:
    client = owner.client()
    response = client.post(URL, b'{"input": [', content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"
    nested = client.post(URL, b"[" * 100_000, content_type="application/json")
    assert nested.status_code == 400


def test_form_encoded_body_is_415(owner: Any) -> None:
    response = owner.client().post(URL, {"input": "a"})
    assert response.status_code == 415
    assert "error" in response.json()


@override_settings(MODERATION_MAX_INPUTS=3, MODERATION_MAX_CHARS=10)
def test_batch_size_and_text_length_limits_are_configurable_400s(owner: Any) -> None:
    client = owner.client()
    too_many = post(client, {"input": ["a", "b", "c", "d"]})
    too_long = post(client, {"input": ["ok", "x" * 11]})
    at_limits = post(client, {"input": ["a", "b", "x" * 10]})
    assert too_many.status_code == 400 and error_of(too_many)["code"] == "too_many_inputs"
    assert too_long.status_code == 400 and error_of(too_long)["code"] == "input_too_long"
    assert error_of(too_long)["param"] == "input[1]"
    assert at_limits.status_code == 200 and len(at_limits.json()["results"]) == 3


def test_default_limits_are_32_inputs_of_32k_characters(owner: Any) -> None:
    client = owner.client()
    assert post(client, {"input": ["a"] * 33}).status_code == 400
    assert post(client, {"input": ["好" * 32_001]}).status_code == 400
    response = post(client, {"input": ["好" * 32_000] + ["a"] * 31})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 32


def test_odd_but_valid_text_is_scored_not_crashed(owner: Any) -> None:
    texts = ["", " ", "\u200b\u200b", "😀" * 50, "\x00控制字符", "A" * 1000, "电话13800138000"]
    response = post(owner.client(), {"input": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(texts)
    assert results[-1]["platform_categories"]["A4_f"] is True  # a phone number is PII


def test_get_is_405_in_openai_shape(owner: Any) -> None:
    response = owner.client().get(URL)
    assert response.status_code == 405
    assert "error" in response.json()


def test_moderations_is_in_the_openapi_schema(owner: Any) -> None:
    schema = owner.client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/v1/moderations"]["post"]
    assert operation["operationId"] == "createModeration"
    assert "200" in operation["responses"] and "400" in operation["responses"]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_conform_to_the_schema_and_never_500(
    live_portal: str, owner: Any, mode: str
) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    from tests.test_schema_fuzz import fuzz_operation

    schema = schemathesis.openapi.from_url(f"{live_portal}/api/schema/?format=json")
    (operation,) = schema.include(path=URL).get_all_operations()
    key, raw = create_api_key(owner.user, name="fuzzer")
    fuzz = {"url": live_portal, "key": raw, "key_id": key.pk, "spare_id": key.pk}
    failures = fuzz_operation(operation.ok(), GenerationMode(mode), fuzz)
    assert not failures, "\n\n".join(failures[:5])


# --- the platform's governance configuration --------------------------------------------


def staff_api(url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{url}/api/governance", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def verdicts(client: openai.OpenAI, *texts: str) -> list[tuple[bool, bool]]:
    """(flagged, flagged for CATEGORY) of each text."""
    results = client.moderations.create(input=list(texts)).results
    return [(r.flagged, (r.model_extra or {})["platform_categories"][CATEGORY]) for r in results]


def test_a_staff_lexicon_edit_and_an_allow_list_entry_reach_moderations_at_once(
    live_portal: str, owner: Any, admin: Any
) -> None:
    client = sdk(live_portal, owner.key)
    staff = staff_api(live_portal, admin.key)
    before = verdicts(client, IN_BAND, ALONE)
    created = staff.post(
        "/lists/",
        json={
            "platform": True,
            "name": "staff-terms",
            "kind": "lexicon",
            "items": [{"text": "某个旧词组", "category": CATEGORY}],
        },
    )
    pk = created.json()["id"]

    # when staff add the term: a new version of the platform lexicon
    edited = staff.post(f"/lists/{pk}/items", json={"add": STAFF_TERMS})
    after_edit = verdicts(client, IN_BAND, ALONE)
    # and then allow the band's name
    allowed = staff.post(
        "/lists/",
        json={"platform": True, "name": "staff-allowed", "kind": "allow", "items": [ALLOWED]},
    )
    after_allow = verdicts(client, IN_BAND, ALONE)

    assert before == [(False, False), (False, False)]
    assert created.status_code == 201, created.text
    assert edited.status_code == 201 and edited.json()["number"] == 2, edited.text
    assert after_edit == [(True, True), (True, True)]
    assert allowed.status_code == 201, allowed.text
    assert after_allow == [(False, False), (True, True)]  # the allow-list excuses the band only


def test_the_pipeline_is_rebuilt_only_when_the_governance_version_moves(
    admin: Any, django_assert_num_queries: Any
) -> None:
    live = LivePipeline(build_pipeline)
    first = live.get()
    with django_assert_num_queries(0):
        unchanged = [live.get() for _ in range(5)]
    lists.create_list(
        admin.user, None, "staff-terms", "lexicon", items=[{"text": TERM, "category": CATEGORY}]
    )
    without_bump = live.get()
    snapshot.bump()  # what the list's commit does (a `db` test never commits)
    rebuilt = live.get()

    assert all(p is first for p in unchanged)
    assert without_bump is first and not first.run(ALONE).flagged
    assert rebuilt is not first and rebuilt.run(ALONE).categories[CATEGORY]


def test_threads_that_find_the_version_moved_rebuild_once_and_none_goes_without(
    db: Any,
) -> None:
    builds: list[Pipeline] = []

    def build() -> Pipeline:
        builds.append(build_pipeline())
        return builds[-1]

    def request(_: int) -> Pipeline:
        try:
            return live.get()
        finally:
            connection.close()  # the thread's own database connection

    live = LivePipeline(build)
    first = live.get()
    snapshot.bump()
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(request, range(32)))

    assert len(builds) == 2  # the first, and one rebuild however the threads interleave
    assert {id(p) for p in served} <= {id(first), id(builds[1])}
    assert live.get() is builds[1]


def test_while_redis_is_unreachable_the_last_pipeline_serves_and_a_change_is_seen_after(
    admin: Any, django_assert_num_queries: Any
) -> None:
    # a client set up as sync_redis() is, of a port nothing listens on
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1)
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1.0, retry=retry)
    current = {"client": sync_redis()}
    live = LivePipeline(build_pipeline, redis=lambda: current["client"])
    first = live.get()

    current["client"] = dead  # Redis goes away; meanwhile staff add a term
    lists.create_list(
        admin.user, None, "staff-terms", "lexicon", items=[{"text": TERM, "category": CATEGORY}]
    )
    snapshot.bump()
    with django_assert_num_queries(0):
        during = [live.get() for _ in range(3)]
    current["client"] = sync_redis()  # Redis is back: tried again within a second
    rebuilt = wait_for(
        lambda: (p := live.get()) is not first and p, timeout_s=5, what="a rebuilt pipeline"
    )

    assert all(p is first for p in during)
    assert rebuilt.run(ALONE).categories[CATEGORY]


def decisions(action: str) -> float:
    labels = {"source": "moderations", "direction": "input", "action": action}
    return REGISTRY.get_sample_value("openmaas_moderation_decisions_total", labels) or 0.0


def test_results_are_counted_as_input_decisions_in_prometheus(live_portal: str, owner: Any) -> None:
    flags, allows = decisions("flag"), decisions("allow")

    sdk(live_portal, owner.key).moderations.create(input=[OFFENSIVE, HARMLESS, HARMLESS])

    assert (decisions("flag") - flags, decisions("allow") - allows) == (1.0, 2.0)
