"""The governance event stream's worker: rows written once however often an entry is
delivered, entries acknowledged only after their rows are committed, retention; and the
snapshot's policy precedence."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from governance.inline import decision_event
from governance.models import ModerationDecision, Policy, Provenance
from governance.policy import DEFAULT_POLICY
from governance.services import events, snapshot
from portal.models import APIKey
from portal.models.keys import hash_key
from portal.services.keys import sync_redis


@pytest.fixture(autouse=True)
def _empty_stream() -> None:
    sync_redis().delete(events.STREAM)


def decision(decision_id: str, user_id: int | None, **extra: Any) -> dict[str, Any]:
    return decision_event(
        decision_id=decision_id,
        ts=time.time(),
        source="gateway",
        direction="input",
        action="block",
        categories=["A1_a"],
        scores={"A1_a": 1.0},
        text="some text",
        request_id=decision_id,
        user_id=user_id,
        context={"model": "m"},
        **extra,
    )


def pending() -> int:
    return int(sync_redis().xpending(events.STREAM, events.GROUP)["pending"])


def test_drain_writes_each_row_once_and_acknowledges_after_commit(db, owner, monkeypatch):
    events.publish(
        [
            decision("d-1", owner.user.pk),
            decision("d-2", 999_999),  # a user deleted since: the row keeps no reference
            {"kind": "provenance", "content_id": "aigc-1", "ts": time.time(), "label": {"a": 1}},
            {"kind": "nonsense"},
        ]
    )

    def fail(entries: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(events, "_open_reviews", fail)
    with pytest.raises(RuntimeError):
        events.drain()
    assert ModerationDecision.objects.count() == 0  # rolled back...
    assert pending() == 4  # ...and nothing acknowledged
    monkeypatch.undo()

    events.publish([decision("d-1", owner.user.pk)])  # delivered twice
    assert events.drain(min_idle_ms=0) == 5
    assert pending() == 0
    rows = {d.decision_id: d for d in ModerationDecision.objects.all()}
    assert set(rows) == {"d-1", "d-2"}
    assert rows["d-1"].user_id == owner.user.pk and rows["d-2"].user_id is None
    assert rows["d-1"].categories == ["A1_a"] and rows["d-1"].action == "block"
    assert Provenance.objects.get().content_id == "aigc-1"
    assert sync_redis().xlen(events.STREAM) == 0


def test_retention_deletes_old_decisions_and_provenance_only(db):
    old = timezone.now() - timedelta(days=200)
    ModerationDecision.objects.create(
        decision_id="old", ts=old, source="gateway", direction="input", action="flag"
    )
    ModerationDecision.objects.create(
        decision_id="new", ts=timezone.now(), source="gateway", direction="input", action="flag"
    )
    Provenance.objects.create(content_id="aigc-old", ts=old)
    assert events.sweep_retention(days=183) == {"decisions": 1, "provenance": 1}
    assert list(ModerationDecision.objects.values_list("decision_id", flat=True)) == ["new"]


def test_policy_precedence_key_then_served_name_then_org_then_default(db, owner, org):
    key = APIKey.objects.get(key_hash=hash_key(owner.key))
    rows = []
    for name, extra in (
        ("for-org", {}),
        ("for-model", {"served_name": "acme-lab/m"}),
    ):
        row = Policy(name=name, rules={"A2": {"input": {"threshold": 0.1, "action": "block"}}})
        row.served_name = extra.get("served_name", "")
        row.set_owner(org)
        row.save()
        rows.append(row)
    mine = Policy(name="mine", rules={})
    mine.set_owner(owner.user)
    mine.save()
    keyed = Policy(name="keyed", api_key=key)
    keyed.set_owner(owner.user)
    keyed.save()
    loaded = snapshot.build()
    assert snapshot.resolve(loaded, **{**ask_for(org, owner), "key_id": key.pk}).ident == keyed.pk
    ask = {
        "key_id": None,
        "user_id": owner.user.pk,
        "org_id": org.pk,
        "served_name": "acme-lab/m",
        "model_owner_org_id": org.pk,
        "model_owner_user_id": None,
    }
    assert snapshot.resolve(loaded, **ask).ident == rows[1].pk
    assert snapshot.resolve(loaded, **{**ask, "served_name": "other"}).ident == rows[0].pk
    assert snapshot.resolve(loaded, **{**ask, "served_name": "x", "org_id": None}).ident == mine.pk
    nobody = {**ask, "served_name": "x", "org_id": None, "user_id": -1}
    assert snapshot.resolve(loaded, **nobody) is DEFAULT_POLICY


def ask_for(org: Any, owner: Any) -> dict[str, Any]:
    return {
        "user_id": owner.user.pk,
        "org_id": org.pk,
        "served_name": "acme-lab/m",
        "model_owner_org_id": org.pk,
        "model_owner_user_id": None,
    }


@pytest.mark.django_db
def test_a_built_snapshot_has_its_classifier_loaded_before_any_check():
    """The model loads in the builder's thread (the gateway's snapshot worker), so a
    gateway's first classifier check does not stall its event loop for seconds."""
    from governance.moderation.classifier import ClassifierChecker

    pipeline = snapshot.build_pipeline()
    (checker,) = [c for c in pipeline.checkers if isinstance(c, ClassifierChecker)]
    assert checker._model is not None
