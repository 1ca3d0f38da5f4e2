"""Celery's entry to governance's tasks (autodiscovered): they live per area in
``governance.jobs``."""

from governance.jobs import classifiers, compliance, events, review

__all__ = ["classifiers", "compliance", "events", "review"]
