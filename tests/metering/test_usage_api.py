"""``/api/usage/``: scoped to the caller, filtered, paginated with totals, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from compute.metering.tasks import drain_usage
from portal.models import Role
from tests.metering.conftest import publish, usage_event

NOV_20 = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
NOV_22 = datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp()


@pytest.fixture
def ledger(db, stream, owner, org, teammate, outsider):
    """olivia: 2 requests of her own, 1 billed to acme-lab; tomas: 1 billed to acme-lab;
    oscar: 1 of his own."""
    key = owner.user.api_keys.get().pk
    publish(
        stream,
        usage_event(owner.user.pk, key_id=key, ts=NOV_20, prompt_tokens=100),
        usage_event(owner.user.pk, key_id=key, ts=NOV_22, model="olivia/other", status=500),
        usage_event(owner.user.pk, key_id=key, ts=NOV_22, org_id=org.pk),
        usage_event(teammate.user.pk, ts=NOV_22, org_id=org.pk, cost_cny="1.5"),
        usage_event(outsider.user.pk, ts=NOV_22, request_id="oscar-only"),
    )
    assert drain_usage() == 5


def request_ids(response):
    assert response.status_code == 200, response.content
    return {row["request_id"] for row in response.json()["results"]}


def test_outsider_sees_only_their_own_usage(ledger, outsider):
    answer = outsider.client().get("/api/usage/")
    assert request_ids(answer) == {"oscar-only"}
    assert answer.json()["totals"]["requests"] == 1
    hourly = outsider.client().get("/api/usage/hourly/").json()
    assert [row["username"] for row in hourly["results"]] == ["oscar"]


def test_member_sees_own_usage_and_org_owner_sees_what_the_org_is_billed(
    ledger, owner, teammate, org
):
    mine = teammate.client().get("/api/usage/").json()
    assert mine["count"] == 1 and mine["results"][0]["username"] == "tomas"
    billed = owner.client().get("/api/usage/").json()
    assert billed["count"] == 4  # her 3 and tomas's one billed to acme-lab
    assert billed["totals"]["cost_cny"] == "1.5003000000"


def test_org_admin_sees_org_usage_and_a_demoted_one_does_not(ledger, teammate, org):
    org.memberships.filter(user=teammate.user).update(role=Role.ADMIN)
    assert teammate.client().get("/api/usage/").json()["count"] == 2  # both billed to acme
    org.memberships.filter(user=teammate.user).update(role=Role.MEMBER)
    assert teammate.client().get("/api/usage/").json()["count"] == 1


def test_admin_sees_everything(ledger, admin):
    assert admin.client().get("/api/usage/").json()["count"] == 5
    assert admin.client().get("/api/usage/hourly/").json()["totals"]["requests"] == 5


def test_anonymous_gets_401(ledger, anon):
    assert anon.get("/api/usage/").status_code == 401


def test_filters_by_model_key_org_and_dates(ledger, owner, org):
    client = owner.client()
    key = owner.user.api_keys.get().pk
    assert client.get("/api/usage/?model=olivia/other").json()["count"] == 1
    assert client.get(f"/api/usage/?key={key}").json()["count"] == 3
    assert client.get("/api/usage/?org=acme-lab").json()["count"] == 2
    assert client.get("/api/usage/?from=2026-11-21").json()["count"] == 3
    assert client.get("/api/usage/?to=2026-11-20").json()["count"] == 1
    assert client.get("/api/usage/?from=2026-11-20T12:00:01Z").json()["count"] == 3
    early = client.get("/api/usage/hourly/?to=2026-11-21").json()
    assert early["totals"] == {
        "requests": 1,
        "errors": 0,
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "cost_cny": "0.0001000000",
    }


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "to=2026-13-40", "to=9999-12-31", "key=abc", "key=99999999999999999999"],
)
def test_bad_filters_are_400(ledger, owner, query):
    answer = owner.client().get(f"/api/usage/?{query}")
    assert answer.status_code == 400
    assert answer["content-type"].startswith("application/json")
    assert owner.client().get(f"/api/usage/hourly/?{query}&format=csv").status_code == 400


def test_paging_keeps_totals_of_the_whole_selection(ledger, owner):
    page = owner.client().get("/api/usage/?limit=1&offset=1").json()
    assert page["count"] == 4 and len(page["results"]) == 1 and page["next"]
    assert page["totals"]["requests"] == 4 and page["totals"]["errors"] == 1


def test_csv_export_streams_a_header_and_the_callers_rows(ledger, owner):
    for answer in (
        owner.client().get("/api/usage/?format=csv"),
        owner.client().get("/api/usage/", HTTP_ACCEPT="text/csv"),
    ):
        assert answer.status_code == 200 and answer.streaming
        assert answer["content-type"].startswith("text/csv")
        text = b"".join(answer.streaming_content).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 4 and "oscar-only" not in text
        assert {"request_id", "model", "prompt_tokens", "cost_cny"} <= set(rows[0])
    hourly = owner.client().get("/api/usage/hourly/?format=csv&model=olivia/tiny")
    lines = b"".join(hourly.streaming_content).decode().splitlines()
    assert lines[0].startswith("hour,model,") and len(lines) == 4
