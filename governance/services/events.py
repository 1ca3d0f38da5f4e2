"""The governance event stream: moderation decisions, generated content and offenders,
from the gateway (and ``/v1/moderations``) to the database, off the request path.

Each entry of the Redis stream :data:`STREAM` has one field, :data:`PACKED`: a JSON
object whose ``kind`` is

``decision``
    one :class:`~governance.models.ModerationDecision` (decision_id, ts, source,
    direction, action, request_id, content_id, served_name, user_id, org_id, key_id,
    policy_id, policy_version, categories, scores, results, excerpt, text_sha256), plus
    ``context`` (what a reviewer needs: the model, the conversation, bounded) and
    optionally ``provenance`` (as below);
``provenance``
    one :class:`~governance.models.Provenance` (content_id, ts, kind, served_name,
    request_id, user_id, org_id, text_sha256, label, watermarked);
``offender``
    a user the gateway throttled or suspended (user_id, org_id, level, violations,
    until, reason), applied by ``governance.services.suspensions.apply``.

:func:`drain` reads the stream through the consumer group :data:`GROUP`, writes the
rows of a batch in one transaction (idempotent on ``decision_id`` / ``content_id``),
opens a review item for every ``flag`` or ``block`` decision, and acknowledges the
entries only after the commit: a worker that dies leaves them pending, and the next
drain claims them once idle for ``min_idle_ms``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from governance.models import ModerationDecision, Policy, Provenance, Suspension
from portal.models import APIKey, Organization
from portal.services.keys import sync_redis

logger = logging.getLogger(__name__)

STREAM = "openmaas:governance"
GROUP = "governance"
PACKED = "e"
MAXLEN = 1_000_000
RECLAIM_AFTER_MS = 60_000
BATCH_SIZE = 500
KINDS = ("decision", "provenance", "offender")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Entry = tuple[bytes, dict[bytes, bytes]]


def pack(event: dict[str, Any]) -> str:
    """An event as the stream entry's one field's value."""
    return str(_compact(event))


def publish(events: Iterable[dict[str, Any]]) -> None:
    """Append ``events`` to the stream (sync, one round trip; Django code such as
    ``/v1/moderations``). Redis errors are logged, not raised: a lost log line must not
    fail the request that caused it."""
    packed = [pack(e) for e in events]
    if not packed:
        return
    try:
        pipe = sync_redis().pipeline(transaction=False)
        for value in packed:
            pipe.xadd(STREAM, {PACKED: value}, maxlen=MAXLEN, approximate=True)
        pipe.execute()
    except redis.RedisError:
        logger.warning("Redis unreachable: %d governance events not recorded", len(packed))


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_group(client: Any) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def drain(
    min_idle_ms: int | None = None, *, batch_size: int = BATCH_SIZE, max_batches: int = 50
) -> int:
    """Move up to ``max_batches`` batches from the stream into the database; entries a
    dead consumer left pending for ``min_idle_ms`` (default a minute) come first.
    Returns how many entries were handled."""
    client = sync_redis()
    ensure_group(client)
    me = _consumer()
    idle = RECLAIM_AFTER_MS if min_idle_ms is None else min_idle_ms
    handled = 0
    for _ in range(max_batches):
        entries = _reclaim(client, me, idle, batch_size) or _read_new(client, me, batch_size)
        if not entries:
            break
        store(entries)
        ids = [entry_id for entry_id, _ in entries]
        pipe = client.pipeline(transaction=True)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()
        handled += len(entries)
    return handled


def _reclaim(client: Any, me: str, min_idle_ms: int, count: int) -> list[Entry]:
    answer: Any = client.xautoclaim(STREAM, GROUP, me, min_idle_ms, "0-0", count=count)
    gone = [entry_id for entry_id, fields in answer[1] if entry_id and not fields]
    if gone:  # trimmed while pending: nothing left to store
        client.xack(STREAM, GROUP, *gone)
    return [(entry_id, fields) for entry_id, fields in answer[1] if entry_id and fields]


def _read_new(client: Any, me: str, count: int) -> list[Entry]:
    answer: Any = client.xreadgroup(GROUP, me, {STREAM: ">"}, count=count)
    return list(answer[0][1]) if answer else []


def _decode(entry_id: bytes, fields: dict[Any, Any]) -> dict[str, Any] | None:
    raw: Any = fields.get(PACKED.encode(), fields.get(PACKED))
    try:
        event = json.loads(raw)
    except (TypeError, ValueError):
        event = None
    if not isinstance(event, dict) or event.get("kind") not in KINDS:
        logger.warning("Malformed governance event %r skipped", entry_id)
        return None
    return event


def store(entries: list[Entry]) -> None:
    """Write one batch: decisions, provenance and offenders, then the review items, in
    one transaction."""
    events = [e for e in (_decode(i, f) for i, f in entries) if e is not None]
    decisions = [e for e in events if e["kind"] == "decision"]
    provenance = [e for e in events if e["kind"] == "provenance"]
    provenance += [e["provenance"] for e in decisions if isinstance(e.get("provenance"), dict)]
    offenders = [e for e in events if e["kind"] == "offender"]
    if not events:
        return
    known = _Known(events)
    with transaction.atomic():
        rows = [_decision_row(e, known) for e in decisions]
        ModerationDecision.objects.bulk_create(
            [r for r in rows if r is not None], ignore_conflicts=True
        )
        Provenance.objects.bulk_create(
            [r for r in (_provenance_row(e, known) for e in provenance) if r is not None],
            ignore_conflicts=True,
        )
        _open_reviews(decisions)
        for event in offenders:
            _apply_offender(event, known)


class _Known:
    """Which referenced users, organisations, keys and policies still exist (a foreign
    key to a deleted one would fail the whole batch for ever)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        def ids(name: str) -> set[int]:
            found = set()
            for e in events:
                for source in (e, e.get("provenance") or {}):
                    value = source.get(name) if isinstance(source, dict) else None
                    if isinstance(value, int) and not isinstance(value, bool):
                        found.add(value)
            return found

        def existing(model: Any, name: str) -> set[int]:
            return set(model.objects.filter(pk__in=ids(name)).values_list("pk", flat=True))

        self.users = existing(get_user_model(), "user_id")
        self.orgs = existing(Organization, "org_id")
        self.keys = existing(APIKey, "key_id")
        self.policies = existing(Policy, "policy_id")

    @staticmethod
    def pick(value: Any, known: set[int]) -> int | None:
        return value if isinstance(value, int) and value in known else None


def _ts(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return timezone.now()


def _text(value: Any, limit: int) -> str:
    return str(value or "")[:limit]


def _decision_row(e: dict[str, Any], known: _Known) -> ModerationDecision | None:
    if not e.get("decision_id"):
        return None
    excerpt_chars = getattr(settings, "GOVERNANCE_EXCERPT_CHARS", 2000)
    return ModerationDecision(
        decision_id=_text(e["decision_id"], 64),
        ts=_ts(e.get("ts")),
        source=_text(e.get("source") or "gateway", 16),
        direction=_text(e.get("direction") or "input", 8),
        action=_text(e.get("action") or "flag", 8),
        request_id=_text(e.get("request_id"), 64),
        content_id=_text(e.get("content_id"), 64),
        served_name=_text(e.get("served_name"), 200),
        user_id=known.pick(e.get("user_id"), known.users),
        org_id=known.pick(e.get("org_id"), known.orgs),
        api_key_id=known.pick(e.get("key_id"), known.keys),
        policy_id=known.pick(e.get("policy_id"), known.policies),
        policy_version=max(int(e.get("policy_version") or 0), 0),
        categories=list(e.get("categories") or []),
        scores=dict(e.get("scores") or {}),
        results=list(e.get("results") or []),
        excerpt=_text(e.get("excerpt"), excerpt_chars),
        text_sha256=_text(e.get("text_sha256"), 64),
    )


def _provenance_row(e: dict[str, Any], known: _Known) -> Provenance | None:
    if not e.get("content_id"):
        return None
    return Provenance(
        content_id=_text(e["content_id"], 64),
        ts=_ts(e.get("ts")),
        kind=e["kind"] if e.get("kind") in ("text", "file") else "text",
        served_name=_text(e.get("served_name"), 200),
        request_id=_text(e.get("request_id"), 64),
        user_id=known.pick(e.get("user_id"), known.users),
        org_id=known.pick(e.get("org_id"), known.orgs),
        text_sha256=_text(e.get("text_sha256"), 64),
        label=dict(e.get("label") or {}),
        watermarked=e.get("watermarked") is True,
    )


def _open_reviews(decisions: list[dict[str, Any]]) -> None:
    """A review item for every flag or block (idempotent per decision)."""
    wanted = {e["decision_id"]: e for e in decisions if e.get("action") in ("flag", "block")}
    if not wanted:
        return
    from governance.services.review import open_for_decision

    for row in ModerationDecision.objects.filter(decision_id__in=list(wanted)):
        context = wanted[row.decision_id].get("context")
        open_for_decision(row, context if isinstance(context, dict) else {})


def _apply_offender(e: dict[str, Any], known: _Known) -> None:
    user_id = known.pick(e.get("user_id"), known.users)
    if user_id is None or e.get("level") not in ("throttled", "suspended"):
        return
    until = _ts(e["until"]) if e.get("until") else None
    if Suspension.objects.filter(user_id=user_id, level=e["level"], until=until).exists():
        return  # delivered twice
    from governance.services.suspensions import apply

    apply(
        user_id,
        known.pick(e.get("org_id"), known.orgs),
        e["level"],
        max(int(e.get("violations") or 0), 0),
        until,
        _text(e.get("reason"), 2000),
    )


def sweep_retention(days: int | None = None) -> dict[str, int]:
    """Delete decisions and provenance older than ``GOVERNANCE_RETENTION_DAYS`` (audit
    events are append-only and stay)."""
    keep = settings.GOVERNANCE_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=keep)
    decisions, _ = ModerationDecision.objects.filter(ts__lt=cutoff).delete()
    provenance, _ = Provenance.objects.filter(ts__lt=cutoff).delete()
    return {"decisions": decisions, "provenance": provenance}
