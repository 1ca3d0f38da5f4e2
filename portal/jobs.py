"""One runner wraps every job: claim → run → finish, with progress, cancellation and the
requeue of jobs whose worker died.

A Celery task calls :func:`run_job` with the job's id; the claim is a compare-and-swap
from ``queued`` to ``running``, so a repeated or late message does nothing. An expected
failure (a :class:`~portal.errors.PlatformError`) fails the job with its message; a
crash fails it with the traceback kept in the event log. A worker killed mid-job leaves
a ``running`` job whose heartbeat stops: :func:`requeue_stale` puts it back in the queue
and the next run starts it again (handlers are idempotent).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone

from portal.errors import Conflict, PlatformError
from portal.models.jobs import Job, JobStatus

logger = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)
HEARTBEAT_EVERY_S = 2.0


class JobCancelled(Exception):
    """Raised inside a handler (by :meth:`JobContext.progress`) when a cancel arrived."""


class JobLost(Exception):
    """Raised inside a handler whose job was requeued under it (presumed dead) and is
    now another attempt's: this one stops without touching the job."""


MAX_ATTEMPTS = 3


class JobContext:
    """What a handler gets besides its job: progress reports that double as heartbeats
    and cancellation checks, throttled to one database write every couple of seconds."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._fraction = job.progress
        self._last = 0.0

    def progress(self, fraction: float, *, force: bool = False) -> None:
        """Note progress (0–1); written with the next heartbeat. Raises
        :class:`JobCancelled` once a cancel is requested."""
        self._fraction = min(max(fraction, 0.0), 1.0)
        self._beat(force)

    def should_stop(self) -> bool:
        """For libraries that poll: True once a cancel is requested (checked throttled)."""
        try:
            self._beat(force=False)
        except JobCancelled:
            return True
        return False

    def _beat(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < HEARTBEAT_EVERY_S:
            return
        self._last = now
        model = type(self.job)
        mine = model.objects.filter(  # type: ignore[attr-defined]
            pk=self.job.pk, status=JobStatus.RUNNING, attempts=self.job.attempts
        )
        if not mine.update(progress=self._fraction, heartbeat_at=timezone.now()):
            raise JobLost
        self.job.progress = self._fraction
        if model.objects.filter(pk=self.job.pk, cancel_requested=True).exists():  # type: ignore[attr-defined]
            raise JobCancelled

    def log(self, message: str, **data: Any) -> None:
        self.job.log(message, data=data)


Handler = Callable[[J, JobContext], dict[str, Any] | None]


def run_job(model: type[J], pk: int, handler: Handler[J]) -> J | None:
    """Claim job ``pk`` and run ``handler`` on it; None when it was not queued."""
    job = model.objects.filter(pk=pk).first()  # type: ignore[attr-defined]
    if job is None or job.status != JobStatus.QUEUED:
        return None
    if job.cancel_requested:
        job.transition(JobStatus.CANCELLED, "cancelled before it started")
        return job
    if not job.transition(JobStatus.RUNNING, "started", attempts=job.attempts + 1):
        return None
    try:
        result = handler(job, JobContext(job))
    except JobLost:
        logger.warning("%s %s was requeued while this attempt ran; stopping", model.__name__, pk)
        return None
    except JobCancelled:
        job.transition(JobStatus.CANCELLED, "cancelled")
    except PlatformError as exc:
        job.transition(JobStatus.FAILED, exc.message, error=exc.message)
    except Exception as exc:
        logger.exception("%s %s crashed", model.__name__, pk)
        job.log(f"crashed: {exc!r}", level="error", data={"traceback": traceback.format_exc()})
        job.transition(
            JobStatus.FAILED, "internal error", error=f"Internal error ({type(exc).__name__})."
        )
    else:
        job.transition(JobStatus.SUCCEEDED, "succeeded", result=result or {}, progress=1.0)
    return job


def request_cancel(job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its handler notices).

    Raises :class:`~portal.errors.Conflict` for a job that already finished.
    """
    with transaction.atomic():
        locked = type(job).objects.select_for_update().get(pk=job.pk)  # type: ignore[attr-defined]
        if locked.status == JobStatus.QUEUED:
            locked.transition(JobStatus.CANCELLED, "cancelled before it started")
        elif locked.status == JobStatus.RUNNING:
            type(job).objects.filter(pk=job.pk).update(cancel_requested=True)  # type: ignore[attr-defined]
            locked.cancel_requested = True
            locked.log("cancel requested")
        else:
            raise Conflict(f"The job already {locked.status}.", code="job_finished")
    return locked


def requeue_stale(model: type[Job], silent_for_s: float) -> list[int]:
    """Put back in the queue every running job without a heartbeat for ``silent_for_s``
    (or fail it after :data:`MAX_ATTEMPTS`); returns the ids requeued, for the caller
    to enqueue again."""
    cutoff = timezone.now() - timedelta(seconds=silent_for_s)
    requeued = []
    for job in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff):  # type: ignore[attr-defined]
        if job.attempts >= MAX_ATTEMPTS:
            message = f"its worker went silent {job.attempts} times; giving up"
            job.transition(JobStatus.FAILED, message, error=message.capitalize() + ".")
        elif job.transition(JobStatus.QUEUED, "worker went silent; queued again", progress=0.0):
            requeued.append(job.pk)
    return requeued


def queued_since(model: type[Job], older_than_s: float) -> list[int]:
    """Ids of jobs queued for more than ``older_than_s``: their message may be lost."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    rows = model.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff)  # type: ignore[attr-defined]
    return list(rows.values_list("pk", flat=True))
