"""Celery entry points of the review queue; the work is in
:mod:`governance.services.review`."""

from __future__ import annotations

import logging

from celery import shared_task

from governance.services import review

logger = logging.getLogger(__name__)


@shared_task(name="governance.jobs.review.escalate_overdue", ignore_result=True)
def escalate_overdue() -> list[str]:
    """Escalate the pending review items past their time-to-review target (beat)."""
    escalated = review.escalate_overdue()
    if escalated:
        logger.warning("Escalated %d overdue review items.", len(escalated))
    return escalated
