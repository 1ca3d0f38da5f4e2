"""The append-only audit log: every moderation decision an admin takes and every change
to policies, lists and suspensions is one :class:`AuditEvent`.

Entries are chained: an entry's ``hash`` is SHA-256 over the previous entry's hash and
its own canonical JSON, so removing or editing a row (the database refuses both, but a
superuser with the table's ownership could) shows in :func:`verify_chain`. Appends are
serialised by a transaction-scoped advisory lock, so two writers never chain to the
same predecessor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from governance.models import AuditEvent

GENESIS = "0" * 64
# pg_advisory_xact_lock key for the chain ("audit" in ASCII).
_LOCK = 0x6175646974


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "ts": event.ts.isoformat(),
        "actor": event.actor_id,
        "actor_name": event.actor_name,
        "org": event.org_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _chain(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def record(
    action: str,
    *,
    actor: Any = None,
    org: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one entry (``action`` like ``"policy.update"``, ``"review.decide"``).

    ``actor`` is a user or None (the platform); ``org`` an organisation, its id or None
    (a platform-wide entry, staff only). ``data`` must be JSON-serialisable; never put
    secrets in it. Runs in its own atomic block (joins the caller's transaction).
    """
    event = AuditEvent(
        ts=timezone.now(),
        actor_id=getattr(actor, "pk", None),
        actor_name=str(actor.get_username()) if actor is not None else "",
        org_id=getattr(org, "pk", org),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        # Round-trip so the stored JSON and the hashed JSON are the same values.
        data=json.loads(json.dumps(data or {}, ensure_ascii=False, default=str)),
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event.prev_hash = last or GENESIS
        event.hash = _chain(event.prev_hash, event)
        event.save()
    return event


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    checked: int
    broken_at: int | None = None  # the id of the first entry that does not chain
    reason: str = ""


def verify_chain(events: Iterable[AuditEvent] | None = None) -> ChainCheck:
    """Re-compute the chain in id order; the first entry whose link or hash is wrong."""
    rows: Iterable[AuditEvent] = (
        events if events is not None else AuditEvent.objects.order_by("id").iterator()
    )
    prev = None
    checked = 0
    for event in rows:
        if prev is not None and event.prev_hash != prev:
            return ChainCheck(False, checked, event.pk, "an entry before it is missing")
        if _chain(event.prev_hash, event) != event.hash:
            return ChainCheck(False, checked, event.pk, "its content was changed")
        prev = event.hash
        checked += 1
    return ChainCheck(True, checked)


EXPORT_COLUMNS = (
    "id", "ts", "actor", "org_id", "action", "target_type", "target_id", "data",
    "prev_hash", "hash",
)  # fmt: skip


def export_rows(events: Iterable[AuditEvent]) -> Iterator[dict[str, Any]]:
    """Flat rows for CSV/JSONL export, keyed (in order) by :data:`EXPORT_COLUMNS`."""
    for e in events:
        yield {
            "id": e.pk,
            "ts": _iso(e.ts),
            "actor": e.actor_name,
            "org_id": e.org_id,
            "action": e.action,
            "target_type": e.target_type,
            "target_id": e.target_id,
            "data": json.dumps(e.data, ensure_ascii=False, sort_keys=True),
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }


def _iso(ts: datetime) -> str:
    return ts.isoformat()
