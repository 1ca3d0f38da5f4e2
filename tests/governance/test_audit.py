"""The audit log: append-only in the database, a hash chain that shows a changed or
missing entry, and its API (filters, CSV/JSONL export, chain check) scoped to staff and
the organisation's owners and admins."""

from __future__ import annotations

import copy
import csv
import io
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from governance.api import review as review_api
from governance.models import AppendOnly, AuditEvent
from governance.services import audit
from tests.conftest import Actor

API = "/api/governance"


@pytest.fixture
def events(owner: Actor, org: Any, outsider: Actor, admin: Actor) -> list[AuditEvent]:
    """Four entries: two of acme-lab's, one of another tenant's, one of the platform's."""
    return [
        audit.record(
            "policy.create", actor=owner.user, org=org, target_type="policy", target_id="7"
        ),
        audit.record(
            "review.decide",
            actor=owner.user,
            org=org,
            target_type="review",
            target_id="review-abc",
            data={"decision": "remove", "notes": "违规"},
        ),
        audit.record("report.create", actor=outsider.user, target_type="review", target_id="r2"),
        audit.record("classifier.activate", actor=admin.user, target_type="classifier"),
    ]


def test_the_database_refuses_to_change_or_delete_an_entry(events: list[AuditEvent]) -> None:
    first = events[0]

    for statement in (
        "UPDATE governance_auditevent SET action = 'policy.delete' WHERE id = %s",
        "DELETE FROM governance_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [first.pk])
    with pytest.raises(AppendOnly):
        first.save()
    with pytest.raises(AppendOnly):
        first.delete()
    assert AuditEvent.objects.get(pk=first.pk).action == "policy.create"
    assert audit.verify_chain().ok


def test_a_changed_entry_breaks_the_chain(events: list[AuditEvent]) -> None:
    stored = list(AuditEvent.objects.order_by("id"))
    assert audit.verify_chain(stored).ok and audit.verify_chain(stored).checked == 4

    tampered = copy.deepcopy(stored)
    tampered[1].data = {"decision": "approve", "notes": "违规"}
    check = audit.verify_chain(tampered)

    assert not check.ok and check.broken_at == stored[1].pk and check.checked == 1
    assert "changed" in check.reason


def test_a_removed_entry_breaks_the_chain(events: list[AuditEvent]) -> None:
    stored = list(AuditEvent.objects.order_by("id"))

    check = audit.verify_chain([stored[0], *stored[2:]])

    assert not check.ok and check.broken_at == stored[2].pk and "missing" in check.reason


def test_org_admins_see_their_organisations_entries_and_staff_all(
    events: list[AuditEvent], owner: Actor, teammate: Actor, outsider: Actor, admin: Actor
) -> None:
    def actions(actor: Actor) -> list[str]:
        rows = actor.client().get(f"{API}/audit/").json()["results"]
        return [row["action"] for row in rows]

    assert actions(owner) == ["review.decide", "policy.create"]  # newest first
    assert actions(admin) == [e.action for e in reversed(events)]
    assert actions(teammate) == [] and actions(outsider) == []
    other = events[2].pk
    assert owner.client().get(f"{API}/audit/{other}/").status_code == 404
    assert outsider.client().get(f"{API}/audit/{events[0].pk}/").status_code == 404
    one = owner.client().get(f"{API}/audit/{events[1].pk}/").json()
    assert one["org"] == "acme-lab" and one["actor"] == "olivia"
    assert one["data"] == {"decision": "remove", "notes": "违规"}
    assert one["hash"] == events[1].hash and one["prev_hash"] == events[0].hash


def test_audit_filters(events: list[AuditEvent], admin: Actor) -> None:
    client = admin.client()

    def ids(**query: Any) -> list[int]:
        response = client.get(f"{API}/audit/", query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    first, decide, report, activate = (e.pk for e in events)
    assert ids(action="review.decide") == [decide]
    assert ids(action="re") == []  # exact unless it ends with "."
    assert ids(action="report.") == [report]
    assert ids(actor="olivia") == [decide, first]
    assert ids(target="review:review-abc") == [decide]
    assert ids(target="7") == [first]
    assert ids(org="acme-lab") == [decide, first]
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert ids(since=later) == []
    assert ids(until=later) == [activate, report, decide, first]
    assert client.get(f"{API}/audit/", {"since": "yesterday"}).status_code == 400


def test_export_streams_csv_and_jsonl_oldest_first(
    events: list[AuditEvent], owner: Actor, admin: Actor
) -> None:
    as_csv = admin.client().get(f"{API}/audit/", {"format": "csv"})
    as_jsonl = owner.client().get(f"{API}/audit/", {"format": "jsonl", "action": "review."})
    unknown = admin.client().get(f"{API}/audit/", {"format": "xml"})

    assert as_csv.status_code == 200 and as_csv.streaming
    assert as_csv["Content-Type"].startswith("text/csv")
    assert "attachment" in as_csv["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(as_csv.streaming_content).decode())))
    assert [int(r["id"]) for r in rows] == [e.pk for e in events]
    assert json.loads(rows[1]["data"]) == {"decision": "remove", "notes": "违规"}
    assert rows[1]["hash"] == events[1].hash
    lines = b"".join(as_jsonl.streaming_content).decode().splitlines()
    assert as_jsonl["Content-Type"].startswith("application/x-ndjson")
    assert [json.loads(line)["action"] for line in lines] == ["review.decide"]
    assert unknown.status_code == 400 and unknown["Content-Type"] == "application/json"


def test_export_streams_page_by_page_over_asgi(
    live_portal: str, events: list[AuditEvent], admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_api, "EXPORT_CHUNK", 3)
    headers = {"Authorization": f"Bearer {admin.key}"}

    with httpx.stream(
        "GET", f"{live_portal}{API}/audit/", params={"format": "jsonl"}, headers=headers
    ) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]

    assert [line["id"] for line in lines] == [e.pk for e in events]
    assert [line["hash"] for line in lines] == [e.hash for e in events]


def test_verify_endpoint(
    events: list[AuditEvent], owner: Actor, teammate: Actor, admin: Actor
) -> None:
    staff = admin.client().get(f"{API}/audit/verify/").json()
    manager = owner.client().get(f"{API}/audit/verify/").json()
    member = teammate.client().get(f"{API}/audit/verify/")

    assert staff == {"ok": True, "checked": 4, "broken_at": None, "reason": ""}
    assert manager == {"ok": True, "checked": None, "broken_at": None, "reason": ""}
    assert member.status_code == 403
