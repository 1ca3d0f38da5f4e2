"""Helpers for the metering tests: a clean usage stream and events to publish on it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from compute.metering import PACKED, STREAM, UsageEvent
from compute.metering.services import stream_client


@pytest.fixture
def stream() -> Iterator[Any]:
    """The real Redis usage stream, emptied (group included) before and after the test."""
    client = stream_client()
    client.delete(STREAM)
    yield client
    client.delete(STREAM)


def usage_event(user_id: int, **fields: Any) -> UsageEvent:
    """A successful non-streamed chat request of ``user_id``; ``fields`` override."""
    event = UsageEvent(
        request_id=uuid.uuid4().hex,
        ts=time.time(),
        key_id=None,
        user_id=user_id,
        org_id=None,
        model="olivia/tiny",
        model_version_id=None,
        replica_id=None,
        node_id=None,
        endpoint="chat",
        stream=False,
        status=200,
        error_code="",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=120.0,
        ttft_ms=None,
        cost_cny="0.0001",
    )
    return replace(event, **fields)


def publish(client: Any, *events: UsageEvent) -> None:
    """Append ``events`` as the gateway does: one packed field each."""
    for event in events:
        client.xadd(STREAM, {PACKED: event.pack()})
