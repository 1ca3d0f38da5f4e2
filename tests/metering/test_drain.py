"""The usage worker: stream entries become ledger rows and hourly rollups, exactly once."""

from __future__ import annotations

import json
from dataclasses import asdict, astuple
from datetime import UTC, datetime
from decimal import Decimal

from compute.metering import BATCH, PACKED, STREAM, UsageEvent, pack_rows
from compute.metering.models import UsageHourly, UsageRecord
from compute.metering.services import GROUP, drain, ensure_group
from compute.metering.tasks import drain_usage
from tests.metering.conftest import publish, usage_event

TEN_PAST = datetime(2026, 11, 23, 10, 10, tzinfo=UTC).timestamp()
ELEVEN = datetime(2026, 11, 23, 11, 0, tzinfo=UTC).timestamp()


def test_n_events_give_n_records_and_hourly_sums(db, stream, owner, org):
    key_id = owner.user.api_keys.get().pk
    events = [
        usage_event(owner.user.pk, key_id=key_id, ts=TEN_PAST + i, prompt_tokens=i)
        for i in range(30)
    ]
    events += [usage_event(owner.user.pk, key_id=key_id, org_id=org.pk, ts=ELEVEN, status=429)]
    events += [usage_event(owner.user.pk, key_id=key_id, ts=ELEVEN + 5, model="other/m")]
    publish(stream, *events)

    assert drain_usage() == 32

    assert UsageRecord.objects.count() == 32
    ten = UsageHourly.objects.get(hour=datetime(2026, 11, 23, 10, tzinfo=UTC))
    assert (ten.requests, ten.errors, ten.prompt_tokens, ten.completion_tokens) == (
        30,
        0,
        sum(range(30)),
        150,
    )
    assert ten.cost_cny == Decimal("0.003") and ten.key_id == key_id and ten.org_id is None
    billed = UsageHourly.objects.get(org=org)
    assert (billed.requests, billed.errors) == (1, 1)
    assert UsageHourly.objects.count() == 3
    assert stream.xlen(STREAM) == 0


def test_draining_twice_or_redelivered_events_do_not_double_count(db, stream, owner):
    events = [usage_event(owner.user.pk, ts=TEN_PAST) for _ in range(5)]
    publish(stream, *events)
    assert drain_usage() == 5
    assert drain_usage() == 0
    publish(stream, events[0], events[1])  # the same requests published again

    assert drain_usage() == 0
    assert UsageRecord.objects.count() == 5
    assert UsageHourly.objects.get().requests == 5


def test_events_of_a_consumer_that_died_before_ack_are_reclaimed_once(db, stream, owner):
    publish(stream, *[usage_event(owner.user.pk, ts=TEN_PAST) for _ in range(7)])
    ensure_group(stream)
    taken = stream.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=4)
    assert len(taken[0][1]) == 4  # delivered to a worker that never acknowledges them

    assert drain_usage(min_idle_ms=60_000) == 3  # not idle long enough: left alone
    assert stream.xpending(STREAM, GROUP)["pending"] == 4
    assert drain_usage(min_idle_ms=0) == 4

    assert UsageRecord.objects.count() == 7
    assert UsageHourly.objects.get().requests == 7
    assert stream.xpending(STREAM, GROUP)["pending"] == 0
    assert stream.xlen(STREAM) == 0


def test_malformed_events_are_dropped_without_blocking_the_rest(db, stream, owner):
    good = usage_event(owner.user.pk)
    stream.xadd(STREAM, {**good.encode(), "request_id": "bad", "ts": "soon"})
    stream.xadd(STREAM, {**usage_event(owner.user.pk).encode(), "cost_cny": "NaN"})
    publish(stream, good)

    assert drain_usage() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == [good.request_id]
    assert stream.xlen(STREAM) == 0


def test_malformed_packed_events_are_dropped_without_blocking_the_rest(db, stream, owner):
    good = usage_event(owner.user.pk)
    stream.xadd(STREAM, {PACKED: "{not json"})
    stream.xadd(STREAM, {PACKED: json.dumps([1, 2])})
    stream.xadd(STREAM, {PACKED: json.dumps({**asdict(good), "request_id": "b", "ts": "soon"})})
    stream.xadd(STREAM, {PACKED: json.dumps({**asdict(good), "request_id": "c", "status": []})})
    publish(stream, good)

    assert drain_usage() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == [good.request_id]
    assert stream.xlen(STREAM) == 0


def row(event: UsageEvent, price_input: object = "2.5", price_output: object = "10") -> tuple:
    """``event`` as a gateway's usage row, with the model's prices instead of its cost."""
    return (*astuple(event)[:-1], price_input, price_output)


def test_a_batch_entry_gives_a_record_per_row_priced_exactly_and_skips_bad_rows(db, stream, owner):
    priced = usage_event(owner.user.pk, prompt_tokens=3, completion_tokens=7)
    unrouted = usage_event(owner.user.pk, status=404, prompt_tokens=0, completion_tokens=0)
    bad = [
        row(usage_event(owner.user.pk))[:-1],  # a value short
        row(usage_event(owner.user.pk), price_input="abc"),
        row(usage_event(owner.user.pk), price_input=2.5),  # prices travel as strings
        row(usage_event(owner.user.pk, ts="soon")),
        "not a row",
    ]
    rows = [row(priced), *bad, row(unrouted, None, None)]
    stream.xadd(STREAM, {BATCH: pack_rows(rows)})

    assert drain_usage() == 2
    costs = dict(UsageRecord.objects.values_list("request_id", "cost_cny"))
    assert costs == {priced.request_id: Decimal("0.0000775"), unrouted.request_id: 0}
    assert stream.xlen(STREAM) == 0


def test_batch_entries_larger_than_a_transaction_are_stored_whole(db, stream, owner):
    stream.xadd(STREAM, {BATCH: pack_rows([row(usage_event(owner.user.pk)) for _ in range(5)])})
    publish(stream, usage_event(owner.user.pk), usage_event(owner.user.pk))
    stream.xadd(STREAM, {BATCH: pack_rows([row(usage_event(owner.user.pk)) for _ in range(3)])})

    assert drain(batch_size=2) == 10
    assert UsageHourly.objects.get().requests == 10
    assert stream.xlen(STREAM) == 0


def test_entries_with_a_field_per_attribute_from_earlier_gateways_are_read(db, stream, owner):
    earlier = usage_event(owner.user.pk, org_id=None, ttft_ms=12.5, stream=True)
    stream.xadd(STREAM, earlier.encode())

    assert drain_usage() == 1
    record = UsageRecord.objects.get()
    assert (record.request_id, record.stream, record.ttft_ms) == (earlier.request_id, True, 12.5)


def test_pending_entries_trimmed_from_the_stream_do_not_clog_reclaiming(db, stream, owner):
    publish(stream, *[usage_event(owner.user.pk) for _ in range(3)])
    ensure_group(stream)
    taken = stream.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=3)
    stream.xdel(STREAM, taken[0][1][0][0], taken[0][1][1][0])  # trimmed while pending

    assert drain_usage(min_idle_ms=0) == 1
    assert stream.xpending(STREAM, GROUP)["pending"] == 0
