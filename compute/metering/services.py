"""The usage worker: Redis stream → ``UsageRecord`` rows in batches → hourly rollups.

Each entry of :data:`~compute.metering.STREAM` is read through a consumer group and
acknowledged (then deleted) only after its row and its share of the rollups are
committed in one transaction. A worker that dies holding entries leaves them pending;
the next drain claims them once they have been idle for ``METERING_RECLAIM_AFTER_S``.
A row already in the ledger (same request id) is neither written nor counted again, so
an entry delivered twice is harmless.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction

from compute.metering import STREAM, UsageEvent, unpack
from compute.metering.models import UsageHourly, UsageRecord

logger = logging.getLogger(__name__)

GROUP = "metering"
# pg_advisory_xact_lock key: drains write one at a time, so two workers' rollup upserts
# never interleave (no lock-order deadlocks between buckets).
_LOCK_KEY = 0x6D65746572  # "meter"
_MAX_COST = Decimal(10) ** 9

Entry = tuple[bytes, dict[bytes, bytes]]


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def stream_client() -> redis.Redis:
    return _redis(settings.REDIS_URL)


def consumer_name() -> str:
    """This process's name in the consumer group (stable for the process's life)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group (and the stream) unless they exist; reads from the start,
    so events published before the first worker ran are consumed too."""
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def drain(
    *,
    consumer: str | None = None,
    min_idle_ms: int | None = None,
    batch_size: int | None = None,
    max_batches: int = 50,
) -> int:
    """Move up to ``max_batches`` batches from the stream into the ledger.

    Entries a dead consumer left pending for ``min_idle_ms`` come first. Returns how
    many new records were written (entries already in the ledger count 0).
    """
    client = stream_client()
    ensure_group(client)
    me = consumer or consumer_name()
    idle = settings.METERING_RECLAIM_AFTER_S * 1000 if min_idle_ms is None else min_idle_ms
    size = batch_size or settings.METERING_BATCH_SIZE
    written = 0
    for _ in range(max_batches):
        entries = _reclaim(client, me, idle, size) or _read_new(client, me, size)
        if not entries:
            break
        for ids, records in _transactions(entries, size):
            written += store_records(records)
            _ack(client, ids)
    return written


def _transactions(
    entries: list[Entry], size: int
) -> Iterator[tuple[list[bytes], list[UsageRecord]]]:
    """The entries' ids and records in groups of whole entries, each of about ``size``
    records or fewer (a gateway's entry holds a batch of events), one transaction each."""
    ids: list[bytes] = []
    records: list[UsageRecord] = []
    for entry_id, fields in entries:
        found = _records(entry_id, fields)
        if ids and len(records) + len(found) > size:
            yield ids, records
            ids, records = [], []
        ids.append(entry_id)
        records += found
    if ids:
        yield ids, records


def _reclaim(client: redis.Redis, me: str, min_idle_ms: int, count: int) -> list[Entry]:
    answer: Any = client.xautoclaim(STREAM, GROUP, me, min_idle_ms, "0-0", count=count)
    entries = [(entry_id, fields) for entry_id, fields in answer[1] if entry_id and fields]
    if len(entries) < len(answer[1]):
        _drop_trimmed(client, min_idle_ms, count)
    return entries


def _drop_trimmed(client: redis.Redis, min_idle_ms: int, count: int) -> None:
    """Entries trimmed from the stream while pending (the gateway's MAXLEN) come back
    empty from XAUTOCLAIM; Redis 7 forgets them, 6.2 keeps them pending for ever. Nothing
    is left to store of them, so acknowledge those no longer in the stream."""
    pending: Any = client.xpending_range(STREAM, GROUP, "-", "+", count, idle=min_idle_ms)
    for item in pending:
        entry_id = item["message_id"]
        if not client.xrange(STREAM, entry_id, entry_id):
            client.xack(STREAM, GROUP, entry_id)


def _read_new(client: redis.Redis, me: str, count: int) -> list[Entry]:
    answer: Any = client.xreadgroup(GROUP, me, {STREAM: ">"}, count=count)
    return list(answer[0][1]) if answer else []


def _ack(client: redis.Redis, ids: list[bytes]) -> None:
    """Acknowledge and trim: a committed entry is no longer needed in the stream."""
    pipe = client.pipeline(transaction=True)
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()


def store_records(found: list[UsageRecord]) -> int:
    """Write the records and roll them up, in one transaction; how many were new."""
    records: dict[str, UsageRecord] = {}
    for record in found:
        records.setdefault(record.request_id, record)
    if not records:
        return 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        inserted = insert_records(sorted(records.values(), key=lambda r: r.request_id))
        new = [records[request_id] for request_id in inserted]
        add_to_rollups(new)
    return len(new)


_COLUMNS = {
    "request_id": "text", "time": "timestamptz", "key_id": "bigint", "user_id": "bigint",
    "org_id": "bigint", "model": "text", "model_version_id": "bigint", "replica_id": "bigint",
    "node_id": "bigint", "endpoint": "text", "stream": "boolean", "status": "integer",
    "error_code": "text", "prompt_tokens": "integer", "completion_tokens": "integer",
    "latency_ms": "double precision", "ttft_ms": "double precision", "cost_cny": "numeric",
}  # fmt: skip
_INSERT_TEMPLATE = """
INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})
ON CONFLICT (request_id) DO NOTHING RETURNING request_id
"""
# Table, column names and types are constants of this module; values go as parameters.
_INSERT = _INSERT_TEMPLATE.format(
    table=UsageRecord._meta.db_table,
    columns=", ".join(_COLUMNS),
    arrays=", ".join(f"%s::{kind}[]" for kind in _COLUMNS.values()),
)


def insert_records(records: list[UsageRecord]) -> list[str]:
    """Insert the rows whose request id is not in the ledger yet (``ON CONFLICT DO
    NOTHING``, as ``bulk_create(ignore_conflicts=True)`` would, plus ``RETURNING``, which
    it cannot give; one array per column keeps the statement small); returns the request
    ids inserted."""
    params = [[getattr(record, column) for record in records] for column in _COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, params)
        return [request_id for (request_id,) in cursor.fetchall()]


_MALFORMED = (TypeError, ValueError, OverflowError, OSError, InvalidOperation)


def _records(entry_id: bytes, fields: dict[Any, Any]) -> list[UsageRecord]:
    """The rows of an entry's events, less the malformed ones (logged, and acknowledged
    with the rest: retrying cannot fix them)."""
    try:
        found = unpack(fields)
    except _MALFORMED as exc:
        logger.warning("dropping malformed usage entry %s: %s", entry_id.decode(), exc)
        return []
    records = []
    for values in found:
        try:
            if isinstance(values, ValueError):
                raise values
            records.append(record_from(UsageEvent.from_values(values)))
        except _MALFORMED as exc:
            logger.warning("dropping malformed usage event in %s: %s", entry_id.decode(), exc)
    return records


def record_from(event: UsageEvent) -> UsageRecord:
    """The ledger row of an event; raises ValueError when a value cannot be stored."""
    if not event.request_id or not math.isfinite(event.ts):
        raise ValueError("no request id or no time")
    cost = Decimal(event.cost_cny or "0")
    if not cost.is_finite() or not 0 <= cost < _MAX_COST:
        raise ValueError(f"cost out of range: {event.cost_cny!r}")
    return UsageRecord(
        request_id=event.request_id[:128],
        time=datetime.fromtimestamp(event.ts, UTC),
        key_id=event.key_id,
        user_id=event.user_id or None,
        org_id=event.org_id,
        model=event.model[:200],
        model_version_id=event.model_version_id,
        replica_id=event.replica_id,
        node_id=event.node_id,
        endpoint=event.endpoint[:16],
        stream=event.stream,
        status=min(max(event.status, 0), 999),
        error_code=event.error_code[:64],
        prompt_tokens=_count(event.prompt_tokens),
        completion_tokens=_count(event.completion_tokens),
        latency_ms=_ms(event.latency_ms) or 0.0,
        ttft_ms=_ms(event.ttft_ms),
        cost_cny=cost,
    )


def _count(value: int) -> int:
    return min(max(value, 0), 2**31 - 1)


def _ms(value: float | None) -> float | None:
    """A duration in milliseconds, to the microsecond (the gateway sends it unrounded:
    rounding is not for its hot path); None when missing or not finite."""
    return round(value, 3) if value is not None and math.isfinite(value) else None


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cny: Decimal = Decimal(0)


_UPSERT = """
INSERT INTO {table} (hour, key_id, user_id, org_id, model, requests, errors,
                     prompt_tokens, completion_tokens, cost_cny)
VALUES {values}
ON CONFLICT (hour, key_id, user_id, org_id, model) DO UPDATE SET
    requests = {table}.requests + EXCLUDED.requests,
    errors = {table}.errors + EXCLUDED.errors,
    prompt_tokens = {table}.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = {table}.completion_tokens + EXCLUDED.completion_tokens,
    cost_cny = {table}.cost_cny + EXCLUDED.cost_cny
"""


def add_to_rollups(records: list[UsageRecord]) -> None:
    """Add new records to their hourly buckets (one upsert statement). Callers pass only
    records that were not in the ledger before, inside the transaction that wrote them."""
    buckets: dict[tuple[Any, ...], _Bucket] = defaultdict(_Bucket)
    for r in records:
        hour = r.time.replace(minute=0, second=0, microsecond=0)
        bucket = buckets[(hour, r.key_id, r.user_id, r.org_id, r.model)]
        bucket.requests += 1
        bucket.errors += int(r.status >= 400)
        bucket.prompt_tokens += r.prompt_tokens
        bucket.completion_tokens += r.completion_tokens
        bucket.cost_cny += r.cost_cny
    if not buckets:
        return
    params: list[Any] = []
    for key, b in buckets.items():
        params += [*key, b.requests, b.errors, b.prompt_tokens, b.completion_tokens, b.cost_cny]
    row = "(" + ", ".join(["%s"] * 10) + ")"
    sql = _UPSERT.format(table=UsageHourly._meta.db_table, values=", ".join([row] * len(buckets)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
