"""The review queue: items opened by flagged decisions and by reports, assigned and
decided by the organisation's admins (or staff), appealed by the affected user, every
step in the audit log; and tenancy: an outsider (or a plain member) sees none of it."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from governance.jobs.review import escalate_overdue
from governance.models import (
    AuditEvent,
    ModerationDecision,
    Provenance,
    ReviewItem,
    ReviewStatus,
)
from governance.services import audit, lists, review
from portal.errors import Conflict, NotFound, PlatformError
from portal.services.keys import create_api_key
from tests.conftest import Actor
from tests.factories import model_repo

API = "/api/governance"
ANSWER = "你好，这是模型的回答，请拨打 13812345678 联系我。"


def decision(org: Any, user: Any, action: str = "flag", **extra: Any) -> ModerationDecision:
    """A gateway decision on ``user``'s request in ``org`` (as the events drain writes)."""
    return ModerationDecision.objects.create(
        decision_id="dec-" + secrets.token_hex(8),
        ts=extra.pop("ts", timezone.now()),
        source="gateway",
        direction="output",
        action=action,
        request_id="req-1",
        served_name="acme-lab/chat",
        user=user,
        org=org,
        categories=["A1_d"],
        scores={"A1_d": 0.93},
        results=[{"checker": "lexicon", "scores": {"A1_d": 0.93}, "spans": []}],
        excerpt="a flagged answer",
        **extra,
    )


def report(actor: Actor, served_name: str = "acme-lab/chat", text: str = ANSWER) -> Any:
    body = {
        "text": text,
        "served_name": served_name,
        "context": {"messages": [{"role": "user", "content": "你好"}]},
        "reason": "leaks a phone number",
    }
    return actor.client().post(f"{API}/reports/", body, format="json")


@pytest.fixture
def chat(org: Any) -> Any:
    """acme-lab's model, served as ``acme-lab/chat``."""
    return model_repo(org, "chat")


def test_flagged_decision_opens_one_review_item(owner: Actor, org: Any, teammate: Actor) -> None:
    made = decision(org, teammate.user)
    context = {"messages": [{"role": "user", "content": "hi"}], "model": "acme-lab/chat"}

    first = review.open_for_decision(made, context)
    again = review.open_for_decision(made, context)

    assert first is not None and again is not None and first.pk == again.pk
    assert ReviewItem.objects.filter(decision=made).count() == 1
    assert first.owner_org_id == org.pk and first.subject_user_id == teammate.user.pk
    assert first.context["messages"] == context["messages"]
    assert first.context["scores"] == {"A1_d": 0.93} and first.categories == ["A1_d"]
    assert first.due_at == made.ts + timedelta(seconds=review.target_s())
    assert AuditEvent.objects.filter(action="review.open", target_id=first.item_id).count() == 1


def test_allowed_or_redacted_decisions_open_no_item(org: Any, teammate: Actor) -> None:
    assert review.open_for_decision(decision(org, teammate.user, "allow"), {}) is None
    assert review.open_for_decision(decision(org, teammate.user, "redact"), {}) is None
    assert not ReviewItem.objects.exists()


def test_report_lands_in_the_model_owners_queue_with_scores(
    owner: Actor, teammate: Actor, outsider: Actor, chat: Any
) -> None:
    response = report(outsider)

    assert response.status_code == 201, response.content
    item = ReviewItem.objects.get(item_id=response.json()["item_id"])
    assert item.owner_org is not None and item.owner_org.name == "acme-lab"
    assert item.source == "report" and item.subject_user_id == outsider.user.pk
    assert item.context["scores"]["PII_PHONE"] == 1.0
    assert item.categories == ["A4_f", "PII_PHONE"]
    listed = owner.client().get(f"{API}/review/").json()
    assert [row["item_id"] for row in listed["results"]] == [item.item_id]
    assert listed["results"][0]["context"]["messages"][0]["content"] == "你好"


def test_report_on_a_users_model_goes_to_staff_only(
    owner: Actor, outsider: Actor, admin: Actor
) -> None:
    model_repo(outsider.user, "own")

    response = report(outsider, served_name="oscar/own")

    assert response.status_code == 201
    item_id = response.json()["item_id"]
    assert ReviewItem.objects.get(item_id=item_id).owner_org is None
    assert owner.client().get(f"{API}/review/{item_id}/").status_code == 404
    assert admin.client().get(f"{API}/review/{item_id}/").status_code == 200


def test_report_assign_decide_is_audited_in_order_and_the_chain_verifies(
    owner: Actor, teammate: Actor, chat: Any
) -> None:
    item_id = report(teammate).json()["item_id"]
    client = owner.client()

    assigned = client.post(f"{API}/review/{item_id}/assign/", {}, format="json")
    decided = client.post(
        f"{API}/review/{item_id}/decide/",
        {"decision": "remove", "notes": "phone number of a third party"},
        format="json",
    )

    assert assigned.status_code == 200 and assigned.json()["assigned_to"] == "olivia"
    assert decided.status_code == 200, decided.content
    body = decided.json()
    assert body["status"] == "removed" and body["resolution"] == "remove"
    assert body["decided_by"] == "olivia" and body["notes"] == "phone number of a third party"
    log = client.get(f"{API}/audit/", {"target": f"review:{item_id}"}).json()["results"]
    assert [e["action"] for e in reversed(log)] == [
        "report.create",
        "review.assign",
        "review.decide",
    ]
    assert [e["actor"] for e in reversed(log)] == ["tomas", "olivia", "olivia"]
    assert log[0]["data"]["decision"] == "remove"
    assert client.get(f"{API}/audit/verify/").json()["ok"] is True
    assert audit.verify_chain().ok


def test_a_decided_item_cannot_be_decided_or_assigned_again(
    owner: Actor, teammate: Actor, chat: Any
) -> None:
    item_id = report(teammate).json()["item_id"]
    client = owner.client()
    first = client.post(f"{API}/review/{item_id}/decide/", {"decision": "approve"}, format="json")

    second = client.post(f"{API}/review/{item_id}/decide/", {"decision": "remove"}, format="json")
    assign = client.post(f"{API}/review/{item_id}/assign/", {}, format="json")

    assert first.status_code == 200 and first.json()["status"] == "approved"
    assert second.status_code == 409 and second.json()["code"] == "review_decided"
    assert assign.status_code == 409
    assert AuditEvent.objects.filter(action="review.decide", target_id=item_id).count() == 1


def test_escalated_item_stays_open_and_can_be_decided_later(
    owner: Actor, teammate: Actor, admin: Actor, chat: Any
) -> None:
    item_id = report(teammate).json()["item_id"]

    up = owner.client().post(f"{API}/review/{item_id}/decide/", {"decision": "escalate"})
    done = admin.client().post(f"{API}/review/{item_id}/decide/", {"decision": "remove"})

    assert up.status_code == 200 and up.json()["status"] == "escalated"
    assert done.status_code == 200 and done.json()["status"] == "removed"


def test_only_a_reviewer_of_the_item_can_be_assigned(
    owner: Actor, teammate: Actor, outsider: Actor, chat: Any
) -> None:
    item_id = report(outsider).json()["item_id"]
    client = owner.client()

    member = client.post(f"{API}/review/{item_id}/assign/", {"assignee": "tomas"}, format="json")
    ghost = client.post(f"{API}/review/{item_id}/assign/", {"assignee": "nobody"}, format="json")
    cleared = client.post(f"{API}/review/{item_id}/assign/", {"assignee": None}, format="json")

    assert member.status_code == 400 and member.json()["param"] == "assignee"
    assert ghost.status_code == 400
    assert cleared.status_code == 200 and cleared.json()["assigned_to"] is None


def test_appeal_flow(owner: Actor, teammate: Actor, outsider: Actor, chat: Any) -> None:
    item_id = report(teammate).json()["item_id"]
    early = teammate.client().post(f"{API}/review/{item_id}/appeals/", {"reason": "fine"})
    owner.client().post(f"{API}/review/{item_id}/decide/", {"decision": "remove"})
    client = teammate.client()

    mine = client.get(f"{API}/my-reviews/").json()["results"]
    made = client.post(f"{API}/review/{item_id}/appeals/", {"reason": "my own number"})
    twice = client.post(f"{API}/review/{item_id}/appeals/", {"reason": "again"})
    stranger = outsider.client().post(f"{API}/review/{item_id}/appeals/", {"reason": "x"})

    assert early.status_code == 409 and early.json()["code"] == "not_appealable"
    assert [(m["item_id"], m["status"], m["appealable"]) for m in mine] == [
        (item_id, "removed", True)
    ]
    assert "notes" not in mine[0]
    assert made.status_code == 201, made.content
    assert twice.status_code == 409 and twice.json()["code"] == "appeal_open"
    assert stranger.status_code == 404
    appeal_id = made.json()["appeal_id"]
    assert client.get(f"{API}/review/{item_id}/appeals/").json()["count"] == 1

    queue = owner.client().get(f"{API}/appeals/", {"status": "open"}).json()["results"]
    decided = owner.client().post(
        f"{API}/appeals/{appeal_id}/decide/",
        {"upheld": False, "response": "it was yours"},
        format="json",
    )
    again = owner.client().post(f"{API}/appeals/{appeal_id}/decide/", {"upheld": True})

    assert [a["appeal_id"] for a in queue] == [appeal_id]
    assert decided.status_code == 200 and decided.json()["status"] == "overturned"
    assert again.status_code == 409
    assert ReviewItem.objects.get(item_id=item_id).status == ReviewStatus.APPROVED
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["appeal.create", "appeal.decide"]
    assert audit.verify_chain().ok


def test_a_member_cannot_decide_an_appeal_of_their_own_item(
    owner: Actor, teammate: Actor, chat: Any
) -> None:
    item_id = report(teammate).json()["item_id"]
    owner.client().post(f"{API}/review/{item_id}/decide/", {"decision": "remove"})
    appeal_id = (
        teammate.client()
        .post(f"{API}/review/{item_id}/appeals/", {"reason": "mine"})
        .json()["appeal_id"]
    )

    response = teammate.client().post(f"{API}/appeals/{appeal_id}/decide/", {"upheld": False})

    assert response.status_code == 404


def test_outsider_sees_no_other_organisations_items_decisions_or_audit_entries(
    owner: Actor, org: Any, teammate: Actor, outsider: Actor, admin: Actor, chat: Any
) -> None:
    made = decision(org, teammate.user)
    item = review.open_for_decision(made, {})
    assert item is not None
    event = AuditEvent.objects.get(action="review.open")
    paths = [
        f"{API}/review/{item.item_id}/",
        f"{API}/review/{item.item_id}/appeals/",
        f"{API}/decisions/{made.decision_id}/",
        f"{API}/audit/{event.pk}/",
    ]
    writes = [
        (f"{API}/review/{item.item_id}/assign/", {}),
        (f"{API}/review/{item.item_id}/decide/", {"decision": "approve"}),
    ]

    for stranger in (outsider, teammate):  # a plain member is no reviewer either
        client = stranger.client()
        for path in paths[:1] + paths[2:]:
            assert client.get(path).status_code == 404, (stranger.user, path)
        for path, body in writes:
            assert client.post(path, body, format="json").status_code == 404
        for listing in ("review/", "decisions/", "audit/", "appeals/"):
            assert client.get(f"{API}/{listing}").json()["count"] == 0, listing
        csv_rows = b"".join(client.get(f"{API}/audit/", {"format": "csv"}).streaming_content)
        assert csv_rows.decode().strip().count("\n") == 0  # the header only
    # The affected member sees the item among their own (to appeal), not in the queue.
    assert teammate.client().get(f"{API}/review/{item.item_id}/appeals/").status_code == 200
    assert outsider.client().get(f"{API}/review/{item.item_id}/appeals/").status_code == 404
    assert outsider.client().get(f"{API}/audit/verify/").status_code == 403
    for reviewer in (owner, admin):
        client = reviewer.client()
        for path in paths:
            assert client.get(path).status_code == 200, (reviewer.user, path)
        assert client.get(f"{API}/review/").json()["count"] == 1
        assert client.get(f"{API}/decisions/").json()["count"] == 1


def test_staff_see_every_organisations_and_the_platforms_items(
    owner: Actor, org: Any, outsider: Actor, admin: Actor
) -> None:
    review.open_for_decision(decision(org, owner.user), {})
    review.open_for_decision(decision(None, outsider.user), {})

    assert admin.client().get(f"{API}/review/").json()["count"] == 2
    assert owner.client().get(f"{API}/review/").json()["count"] == 1
    assert outsider.client().get(f"{API}/review/").json()["count"] == 0


def test_queue_filters(owner: Actor, org: Any, teammate: Actor, chat: Any) -> None:
    late = review.open_for_decision(decision(org, teammate.user), {})
    assert late is not None
    ReviewItem.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(hours=1))
    reported = report(teammate).json()["item_id"]
    client = owner.client()
    client.post(f"{API}/review/{reported}/assign/", {}, format="json")

    def ids(**query: Any) -> list[str]:
        return [r["item_id"] for r in client.get(f"{API}/review/", query).json()["results"]]

    assert ids(overdue="true") == [late.item_id]
    assert ids(overdue="false") == [reported]
    assert ids(source="report") == [reported]
    assert ids(assigned_to_me="true") == [reported]
    assert ids(status="pending") == [late.item_id, reported]  # by due time
    assert ids(status="removed") == []
    assert client.get(f"{API}/review/", {"status": "bogus"}).status_code == 400
    assert client.get(f"{API}/review/{late.item_id}/").json()["overdue"] is True


def test_overdue_pending_items_are_escalated_once(owner: Actor, org: Any, teammate: Actor) -> None:
    with override_settings(GOVERNANCE_REVIEW_TARGET_S=60):
        old = decision(org, teammate.user, ts=timezone.now() - timedelta(minutes=5))
        late = review.open_for_decision(old, {})
        fresh = review.open_for_decision(decision(org, teammate.user), {})
        assert late is not None and fresh is not None

        first = escalate_overdue()
        second = escalate_overdue()

    assert first == [late.item_id] and second == []
    late.refresh_from_db()
    assert late.status == ReviewStatus.ESCALATED and late.due_at > timezone.now()
    assert ReviewItem.objects.get(pk=fresh.pk).status == ReviewStatus.PENDING
    assert AuditEvent.objects.filter(action="review.escalate").count() == 1


def test_services_refuse_a_reviewer_of_another_organisation(
    owner: Actor, org: Any, teammate: Actor, outsider: Actor
) -> None:
    item = review.open_for_decision(decision(org, teammate.user), {})
    assert item is not None

    with pytest.raises(NotFound):
        review.decide(outsider.user, item, "approve")
    with pytest.raises(NotFound):
        review.assign(outsider.user, item, outsider.user)
    with pytest.raises(PlatformError):
        review.decide(owner.user, item, "adjust_lexicon", lexicon=None)
    review.decide(owner.user, item, "approve")
    with pytest.raises(Conflict):
        review.decide(owner.user, item, "remove")


def test_a_report_needs_text_and_a_bounded_context(teammate: Actor) -> None:
    client = teammate.client()
    url = f"{API}/reports/"

    empty = client.post(url, {"text": "  "}, format="json")
    nul = client.post(url, {"text": "ok", "context": {"m": "a\x00b"}}, format="json")
    huge = client.post(url, {"text": "ok", "context": {"m": "x" * 70_000}}, format="json")

    assert empty.status_code == 400
    assert nul.status_code == 400 and nul.json()["param"] == "context"
    assert huge.status_code == 400


def test_reports_are_limited_per_user_and_hour(teammate: Actor, outsider: Actor) -> None:
    with override_settings(GOVERNANCE_REPORTS_PER_HOUR=2):
        made = [report(teammate, served_name="").status_code for _ in range(3)]
        other = report(outsider, served_name="")

    assert made == [201, 201, 429] and other.status_code == 201


def test_a_key_without_the_moderation_scope_is_refused(owner: Actor) -> None:
    _, raw = create_api_key(owner.user, name="infer-only", scopes=["inference"])
    client = Actor(owner.user, raw).client()

    assert client.get(f"{API}/review/").status_code == 403
    assert client.post(f"{API}/reports/", {"text": "x"}, format="json").status_code == 403


def test_adjust_lexicon_adds_terms_through_the_lists_service(
    owner: Actor, org: Any, teammate: Actor
) -> None:
    lexicon = lists.create_list(owner.user, org, "house-terms", "lexicon")
    item = review.open_for_decision(decision(org, teammate.user), {})
    assert item is not None

    response = owner.client().post(
        f"{API}/review/{item.item_id}/decide/",
        {"decision": "adjust_lexicon", "lexicon": {"list": lexicon.pk, "add": ["坏词"]}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "removed"
    lexicon.refresh_from_db()
    assert lexicon.current.number == 2
    assert [i["text"] for i in lexicon.current.items] == ["坏词"]
    assert lexicon.current.items[0]["category"] == "A1_d"
    logged = AuditEvent.objects.get(action="review.decide", target_id=item.item_id)
    assert logged.data["lexicon"]["added"] == ["坏词"]


def test_removing_a_false_positive_term_approves_the_item(
    owner: Actor, org: Any, teammate: Actor, outsider: Actor
) -> None:
    lexicon = lists.create_list(
        owner.user, org, "house-terms", "lexicon", items=[{"text": "苹果", "category": "A1_d"}]
    )
    theirs = lists.create_list(outsider.user, outsider.user, "oscar-terms", "lexicon")
    item = review.open_for_decision(decision(org, teammate.user), {})
    assert item is not None

    with pytest.raises(PlatformError) as refused:
        review.decide(owner.user, item, "adjust_lexicon", lexicon={"list": theirs.pk, "add": ["x"]})
    decided = review.decide(
        owner.user, item, "adjust_lexicon", "fruit", {"list": lexicon.pk, "remove": ["苹果"]}
    )

    assert refused.value.param == "lexicon.list"
    assert decided.status == ReviewStatus.APPROVED and decided.resolution == "adjust_lexicon"
    lexicon.refresh_from_db()
    assert lexicon.current.items == []


def test_a_report_by_content_id_finds_the_model_in_the_provenance_registry(
    owner: Actor, teammate: Actor, chat: Any
) -> None:
    Provenance.objects.create(
        content_id="aigc-req-42", ts=timezone.now(), served_name="acme-lab/chat"
    )
    body = {"content_id": "aigc-req-42", "text": ANSWER, "reason": "wrong"}

    response = teammate.client().post(f"{API}/reports/", body, format="json")

    assert response.status_code == 201 and response.json()["served_name"] == "acme-lab/chat"
    assert owner.client().get(f"{API}/review/").json()["count"] == 1
