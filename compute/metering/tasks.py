"""Celery entry point of the usage worker (beat runs ``drain_usage`` every few seconds)."""

from __future__ import annotations

from celery import shared_task

from compute.metering import services


@shared_task(name="compute.metering.tasks.drain_usage", ignore_result=True)
def drain_usage(min_idle_ms: int | None = None) -> int:
    """Write pending usage events to the ledger; returns how many records were new."""
    return services.drain(min_idle_ms=min_idle_ms)
