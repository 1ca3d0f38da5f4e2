"""Celery tasks of the governance event stream: beat runs ``drain_governance`` every two
seconds and ``sweep_retention`` daily."""

from __future__ import annotations

from celery import shared_task

from governance.services import events


@shared_task(name="governance.jobs.events.drain_governance", ignore_result=True)
def drain_governance(min_idle_ms: int | None = None) -> int:
    """Write pending governance events to the database; returns how many were handled."""
    return events.drain(min_idle_ms)


@shared_task(name="governance.jobs.events.sweep_retention", ignore_result=True)
def sweep_retention() -> dict[str, int]:
    """Delete decisions and provenance past ``GOVERNANCE_RETENTION_DAYS``."""
    return events.sweep_retention()
