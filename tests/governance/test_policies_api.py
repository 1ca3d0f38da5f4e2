"""``/api/governance/policies/`` and ``/api/governance/suspensions/``: CRUD, validation
errors that name the field path, narrowing to a deployment or a key of the owner's,
tenancy (an outsider gets 404), the audit trail, and suspensions applied and lifted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from governance.models import AuditEvent, Policy, Suspension
from governance.services import audit, policies, suspensions
from portal.models import Role
from portal.services.keys import create_api_key

POLICIES = "/api/governance/policies/"
SUSPENSIONS = "/api/governance/suspensions/"
STRICT = {
    "A2": {"input": {"threshold": 0.3, "action": "block"}},
    "PII_PHONE": {"output": {"threshold": 0.5, "action": "redact"}},
}


def actions_for(target_type: str, target_id: Any) -> list[str]:
    rows = AuditEvent.objects.filter(target_type=target_type, target_id=str(target_id))
    return list(rows.order_by("id").values_list("action", flat=True))


def create(actor: Any, **body: Any) -> Any:
    return actor.client().post(POLICIES, {"name": "strict", **body}, format="json")


# --- CRUD --------------------------------------------------------------------------------


def test_owner_creates_reads_updates_and_deletes_a_policy_with_audit_events(owner: Any) -> None:
    client = owner.client()
    # when olivia creates a policy
    response = create(owner, rules=STRICT, labels={"explicit": "end"})
    # then it is hers, version 1, with the documents as given
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["owner"] == "olivia" and body["version"] == 1 and body["enabled"] is True
    assert body["rules"] == STRICT and body["labels"] == {"explicit": "end"}
    pk = body["id"]
    assert client.get(f"{POLICIES}{pk}/").json()["name"] == "strict"
    assert [p["id"] for p in client.get(POLICIES).json()["results"]] == [pk]
    # when she changes it twice
    patched = client.patch(f"{POLICIES}{pk}/", {"enabled": False}, format="json")
    assert patched.status_code == 200, patched.content
    client.patch(f"{POLICIES}{pk}/", {"offenders": {"suspend_after": 3}}, format="json")
    # then each change is a new version
    row = Policy.objects.get(pk=pk)
    assert (row.version, row.enabled, row.offenders) == (3, False, {"suspend_after": 3})
    # and what the gateway applies is the documents over the platform default
    applied = policies.compiled(row)
    assert (applied.ident, applied.version) == (pk, 3)
    assert applied.outcome("input", {"A2_c": 0.4}).action == "block"  # A2 input: 0.3, block
    assert applied.outcome("output", {"A2_c": 0.6}).action == "block"  # the default's
    assert applied.offenders["suspend_after"] == 3 and applied.offenders["window_s"] == 3600
    # when she deletes it
    assert client.delete(f"{POLICIES}{pk}/").status_code == 204
    # then it is gone, and every change is in the audit log, chained
    assert not Policy.objects.filter(pk=pk).exists()
    assert actions_for("policy", pk) == [
        "policy.create",
        "policy.update",
        "policy.update",
        "policy.delete",
    ]
    update = AuditEvent.objects.filter(action="policy.update").order_by("id").first()
    assert update is not None and update.actor_id == owner.user.pk
    assert update.data["changed"] == ["enabled"] and update.data["version"] == 2
    assert audit.verify_chain().ok


def test_org_admin_manages_the_org_policy_and_lists_filter_by_owner(
    owner: Any, org: Any, teammate: Any
) -> None:
    # given an org policy by its owner, and one of her own
    response = create(owner, owner="acme-lab", rules=STRICT)
    assert response.status_code == 201, response.content
    assert response.json()["owner"] == "acme-lab"
    create(owner, name="mine")
    # then ?owner= narrows the list
    listed = owner.client().get(POLICIES, {"owner": "acme-lab"}).json()["results"]
    assert [p["name"] for p in listed] == ["strict"]
    event = AuditEvent.objects.get(action="policy.create", target_id=str(response.json()["id"]))
    assert event.org_id == org.pk
    # a plain member neither sees nor creates the org's policies
    assert teammate.client().get(POLICIES).json()["results"] == []
    assert create(teammate, owner="acme-lab", name="theirs").status_code == 403
    # once an admin, the teammate does
    org.memberships.filter(user=teammate.user).update(role=Role.ADMIN)
    assert [p["name"] for p in teammate.client().get(POLICIES).json()["results"]] == ["strict"]


def test_duplicate_name_is_a_conflict(owner: Any) -> None:
    assert create(owner).status_code == 201
    response = create(owner)
    assert response.status_code == 409 and response.json()["code"] == "name_taken"


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rules": {"A9_z": {"input": {"action": "block"}}}}, "rules.A9_z"),
        ({"rules": {"A1": {"sideways": {"action": "block"}}}}, "rules.A1.sideways"),
        ({"rules": {"A1": {"input": {"action": "shout"}}}}, "rules.A1.input.action"),
        (
            {"rules": {"A1": {"input": {"action": "block", "threshold": 2}}}},
            "rules.A1.input.threshold",
        ),
        ({"rules": []}, "rules"),
        ({"offenders": {"suspend_after": -1}}, "offenders.suspend_after"),
        ({"offenders": {"jail_s": 1}}, "offenders.jail_s"),
        ({"labels": {"explicit": "middle"}}, "labels.explicit"),
        ({"labels": {"text": ""}}, "labels.text"),
        ({"labels": {"text": "AI\u0000"}}, "labels.text"),
        ({"served_name": "someone-else/model"}, "served_name"),
        ({"api_key": 2**40}, "api_key"),
    ],
)
def test_invalid_policy_is_a_400_naming_the_field(owner: Any, body: Any, param: str) -> None:
    response = create(owner, **body)
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["param"] == param and error["detail"].startswith(param)
    assert not Policy.objects.exists()


def test_invalid_update_changes_nothing(owner: Any) -> None:
    pk = create(owner, rules=STRICT).json()["id"]
    bad = {"rules": {"A1": {"output": {"action": "block", "threshold": "high"}}}}
    response = owner.client().patch(f"{POLICIES}{pk}/", bad, format="json")
    assert response.status_code == 400
    assert response.json()["param"] == "rules.A1.output.threshold"
    row = Policy.objects.get(pk=pk)
    assert (row.version, row.rules) == (1, STRICT)
    assert actions_for("policy", pk) == ["policy.create"]


def test_policy_narrows_to_own_deployment_and_key_only(owner: Any, outsider: Any) -> None:
    mine, _ = create_api_key(owner.user, name="app")
    theirs, _ = create_api_key(outsider.user, name="theirs")
    # a key of the owner's and a model of the owner's: accepted
    response = create(owner, served_name="olivia/chat", api_key=mine.pk)
    assert response.status_code == 201, response.content
    assert response.json()["api_key"] == mine.pk
    assert response.json()["api_key_prefix"] == mine.prefix
    # another user's key: a 400 naming api_key
    response = create(owner, name="other", api_key=theirs.pk)
    assert response.status_code == 400 and response.json()["param"] == "api_key"


def test_org_policy_takes_only_the_orgs_keys(owner: Any, org: Any) -> None:
    personal, _ = create_api_key(owner.user, name="personal")
    org_key, _ = create_api_key(owner.user, name="lab", organization="acme-lab")
    response = create(owner, owner="acme-lab", api_key=personal.pk)
    assert response.status_code == 400 and response.json()["param"] == "api_key"
    response = create(owner, owner="acme-lab", api_key=org_key.pk, served_name="acme-lab/m")
    assert response.status_code == 201, response.content


# --- tenancy -----------------------------------------------------------------------------


def test_outsider_gets_404_for_another_owners_policy(owner: Any, org: Any, outsider: Any) -> None:
    pk = create(owner, owner="acme-lab").json()["id"]
    client = outsider.client()
    assert client.get(POLICIES).json()["results"] == []
    assert client.get(f"{POLICIES}{pk}/").status_code == 404
    assert client.patch(f"{POLICIES}{pk}/", {"enabled": False}, format="json").status_code == 404
    assert client.delete(f"{POLICIES}{pk}/").status_code == 404
    assert create(outsider, owner="acme-lab").status_code == 403
    assert Policy.objects.get(pk=pk).version == 1


def test_malformed_ids_are_404s(owner: Any) -> None:
    for pk in ("abc", "99999999999999999999999", "١٢"):
        assert owner.client().get(f"{POLICIES}{pk}/").status_code == 404


def test_key_needs_the_moderation_scope(owner: Any) -> None:
    from rest_framework.test import APIClient

    _, raw = create_api_key(owner.user, name="narrow", scopes=["inference"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get(POLICIES)
    assert response.status_code == 403 and response.json()["code"] == "insufficient_scope"


# --- suspensions -------------------------------------------------------------------------


def test_offender_suspension_is_applied_once_and_lifted_by_staff(owner: Any, admin: Any) -> None:
    until = timezone.now() + timedelta(hours=1)
    # when the offender counter suspends olivia, twice (a repeat)
    first = suspensions.apply(owner.user.pk, None, "suspended", 20, until, "20 blocked inputs")
    again = suspensions.apply(owner.user.pk, None, "suspended", 22, until, "22 blocked inputs")
    # then there is one row, extended, and it is in force
    assert again.pk == first.pk and again.violations == 22
    assert suspensions.active_for(owner.user.pk) == first
    assert actions_for("suspension", first.pk) == ["suspension.create"]
    # staff see it; olivia herself and others do not
    listed = admin.client().get(SUSPENSIONS, {"active": True}).json()["results"]
    assert [(r["user"], r["level"], r["active"]) for r in listed] == [("olivia", "suspended", True)]
    assert owner.client().get(f"{SUSPENSIONS}{first.pk}/").status_code == 404
    assert owner.client().post(f"{SUSPENSIONS}{first.pk}/lift").status_code == 404
    # when staff lift it
    response = admin.client().post(f"{SUSPENSIONS}{first.pk}/lift")
    # then it is no longer in force, and the lift is audited
    assert response.status_code == 200, response.content
    assert response.json()["active"] is False and response.json()["lifted_by"] == "ada"
    assert suspensions.active_for(owner.user.pk) is None
    assert actions_for("suspension", first.pk) == ["suspension.create", "suspension.lift"]
    assert admin.client().post(f"{SUSPENSIONS}{first.pk}/lift").status_code == 409
    assert admin.client().get(SUSPENSIONS, {"active": True}).json()["results"] == []


def test_most_severe_active_suspension_wins_and_expired_ones_do_not_count(owner: Any) -> None:
    past = timezone.now() - timedelta(minutes=1)
    suspensions.apply(owner.user.pk, None, "suspended", 30, past, "expired")
    throttle = suspensions.apply(owner.user.pk, None, "throttled", 5, None, "5 blocked")
    assert suspensions.active_for(owner.user.pk) == throttle
    suspend = suspensions.apply(owner.user.pk, None, "suspended", 20, None, "20 blocked")
    assert suspensions.active_for(owner.user.pk) == suspend


def test_org_admin_suspends_a_member_and_sees_only_the_orgs_suspensions(
    owner: Any, org: Any, teammate: Any, outsider: Any
) -> None:
    other = suspensions.apply(outsider.user.pk, None, "throttled", 5, None, "elsewhere")
    client = owner.client()
    body = {"user": "tomas", "org": "acme-lab", "level": "throttled", "reason": "spam"}
    # the org's owner throttles a member of the org
    response = client.post(SUSPENSIONS, body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["user"], created["org"], created["active"]) == ("tomas", "acme-lab", True)
    event = AuditEvent.objects.get(action="suspension.create", target_id=str(created["id"]))
    assert event.actor_id == owner.user.pk and event.org_id == org.pk
    # and sees only the org's, not the outsider's
    assert [r["id"] for r in client.get(SUSPENSIONS).json()["results"]] == [created["id"]]
    assert client.get(f"{SUSPENSIONS}{other.pk}/").status_code == 404
    # she may not suspend someone outside the org, nor without naming the org
    outside = {**body, "user": "oscar"}
    assert client.post(SUSPENSIONS, outside, format="json").status_code == 403
    assert client.post(SUSPENSIONS, {**body, "org": None}, format="json").status_code == 400
    no_org = {k: v for k, v in body.items() if k != "org"}
    assert client.post(SUSPENSIONS, no_org, format="json").status_code == 403
    # the member may not lift it
    assert teammate.client().post(f"{SUSPENSIONS}{created['id']}/lift").status_code == 404
    assert client.post(f"{SUSPENSIONS}{created['id']}/lift").status_code == 200
    assert Suspension.objects.get(pk=created["id"]).lifted_by_id == owner.user.pk
