"""Celery task of the moderation classifiers: train one recorded version (the work is in
:func:`governance.services.classifiers.run_training`)."""

from __future__ import annotations

from celery import shared_task

from governance.services import classifiers


@shared_task(name="governance.tasks.train_classifier", ignore_result=True)
def train_classifier(version_id: int) -> str:
    """Train classifier version ``version_id`` if it is still pending; its status,
    metrics or error end up on the row. Returns the status it was left in."""
    row = classifiers.run_training(version_id)
    return row.status if row is not None else "skipped"
