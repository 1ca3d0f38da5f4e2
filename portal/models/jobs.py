"""The job convention every sub-platform's jobs share (dataset processing, fine-tunes,
evaluation runs, moderation batches): one status field with explicit transitions that
change only by compare-and-swap, progress and a heartbeat, and an append-only event log.

Concrete jobs subclass :class:`Job` and an event model subclassing :class:`JobEvent`
with a ``job`` foreign key, named by ``Job.event_model``. The runner is in
:mod:`portal.jobs`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"

    ACTIVE: ClassVar[frozenset[str]]
    TERMINAL: ClassVar[frozenset[str]]


JobStatus.ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
JobStatus.TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# running → queued is the requeue of a job whose worker went silent.
TRANSITIONS: dict[str, frozenset[str]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
}


class IllegalTransition(Exception):
    """A transition the state machine does not allow: a bug, never user input."""


class Job(models.Model):
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    event_model: ClassVar[type[JobEvent]]
    # A job type with more states (a fine-tune's ``validating_files``) widens its own
    # ``status`` choices and these transitions; ``active_statuses`` are the non-final ones.
    transitions: ClassVar[dict[str, frozenset[str]]] = TRANSITIONS
    active_statuses: ClassVar[frozenset[str]] = JobStatus.ACTIVE

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.status not in self.active_statuses

    def transition(self, new: str, message: str = "", **fields: Any) -> bool:
        """Move ``status`` to ``new`` if it is still what this instance read; log an event.

        Returns False when another process moved the job first (the caller re-reads);
        raises :class:`IllegalTransition` for a move the state machine forbids.
        """
        old = self.status
        if new not in self.transitions.get(old, frozenset()):
            raise IllegalTransition(f"{type(self).__name__} {self.pk}: {old} → {new}")
        now = timezone.now()
        values: dict[str, Any] = {"status": new, **fields}
        if new == JobStatus.RUNNING:
            values.setdefault("started_at", now)
            values.setdefault("heartbeat_at", now)
        if new in JobStatus.TERMINAL:
            values["finished_at"] = now
        # The attempt is part of the swap: a worker presumed dead and requeued must not
        # finish the job that a later attempt now runs (running → queued → running).
        current = type(self).objects.filter(pk=self.pk, status=old, attempts=self.attempts)  # type: ignore[attr-defined]
        # The move and its event commit together: a worker killed between them must not
        # leave a status change that the job's history never shows.
        with transaction.atomic():
            if not current.update(**values):
                return False
            for name, value in values.items():
                setattr(self, name, value)
            self.log(message or f"{old} → {new}", old_status=old, new_status=new)
        return True

    def log(self, message: str, level: str = "info", **extra: Any) -> JobEvent:
        """Append one event (a status change when ``old_status``/``new_status`` are given)."""
        fields: dict[str, Any] = {"job": self, "message": message[:2000], "level": level}
        return self.event_model._default_manager.create(**fields, **extra)


class JobEvent(models.Model):
    """One line of a job's append-only log; a status change carries old and new."""

    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()
    old_status = models.CharField(max_length=16, blank=True)
    new_status = models.CharField(max_length=16, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True
        ordering = ["pk"]
