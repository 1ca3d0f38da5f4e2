"""Celery entry points of the training sub-platform."""

from __future__ import annotations

from celery import shared_task

from training.services import jobs


@shared_task(name="training.tasks.advance_waiting_jobs", ignore_result=True)
def advance_waiting_jobs(version_id: int | None = None) -> int:
    """Queue (or fail) jobs in ``validating_files`` whose files have settled."""
    return jobs.advance_waiting(version_id)
