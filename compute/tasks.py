"""Celery entry points of the compute pool (beat runs ``reconcile_pool`` every few s)."""

from __future__ import annotations

from celery import shared_task

from compute.services import scheduler


@shared_task(name="compute.tasks.reconcile_pool", ignore_result=True)
def reconcile_pool() -> dict[str, int]:
    return scheduler.reconcile_pool()
