"""The fine-tuning pages: the user's jobs, the create form, and a job's page (status,
progress, live loss chart, events, checkpoints, cancel, the fine-tuned model, an int8
export of a succeeded LoRA fine-tune and the exports made).

A job's page polls :func:`job_data` (JSON, the browser session) every ~2 s while the
job is active. Reads and writes go through :mod:`training.services.jobs`; another
user's job is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from portal.auth import acting_user
from portal.errors import NotFound, PlatformError
from portal.services.keys import session_grant
from portal.views import not_found
from training.forms import FineTuneForm
from training.models import (
    FineTuneStatus,
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
    Task,
)
from training.services import jobs

PAGE_SIZE = 20
EVENTS_SHOWN = 50
MAX_POINTS = 5000
POLL_MS = 2000
CHART_METRICS = ("train_loss", "valid_loss")
STATUS_LABELS: dict[str, Any] = {
    FineTuneStatus.VALIDATING_FILES: _("校验文件中"),
    FineTuneStatus.QUEUED: _("排队中"),
    FineTuneStatus.RUNNING: _("训练中"),
    FineTuneStatus.SUCCEEDED: _("已完成"),
    FineTuneStatus.FAILED: _("失败"),
    FineTuneStatus.CANCELLED: _("已取消"),
}


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def _job(request: HttpRequest, job_id: str) -> FineTuningJob | None:
    try:
        return jobs.get_job(request.user, job_id)
    except NotFound:
        return None


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """The user's own jobs, newest first."""
    user = acting_user(request)
    own = jobs.jobs_of(user).filter(owner_user=user)
    own = own.select_related("base_version__repo", "result_version__repo")
    own = own.order_by("-created_at", "-id")
    page = Paginator(own, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(job, status_label(job.status)) for job in page]
    return render(request, "training/list.html", {"page": page, "rows": rows})


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    """Create a job; its page follows it."""
    form = FineTuneForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        job = form.save(grant=session_grant(request.user))
        if job is not None:
            return redirect("fine-tuning-job", job_id=job.id)
    return render(request, "training/new.html", {"form": form, "auto": jobs.hyper.AUTO})


@login_required
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """A job's page; a job the user may not read is a 404."""
    job = _job(request, job_id)
    if job is None:
        return not_found(request)
    result_repo = job.result_version.repo if job.result_version else None
    exports = [(e, status_label(e.status)) for e in jobs.exports_of(job)]
    context = {
        "job": job,
        "status_label": status_label(job.status),
        "active": job.status in FineTuningJob.active_statuses,
        "percent": round(job.progress * 100),
        "events": [_event(e) for e in _latest_events(job)],
        "checkpoints": [_checkpoint(c) for c in _checkpoints(job)],
        "hyperparameters": jobs.shown_hyperparameters(job),
        "result_repo": result_repo,
        "exportable": _exportable(job),
        "exports": exports,
        "report": (job.export or {}).get("report") or {},
        "poll_ms": POLL_MS,
        "status_labels": {str(k): str(v) for k, v in STATUS_LABELS.items()},
    }
    return render(request, "training/detail.html", context)


@login_required
def job_data(request: HttpRequest, job_id: str) -> JsonResponse:
    """What a job's page refreshes: status, progress, the loss points after the metrics
    event ``since`` (``[step, train_loss, valid_loss]``; ``last`` is the newest one's id),
    the newest events and the checkpoints."""
    job = _job(request, job_id)
    if job is None:
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    since = _event_id(request.GET.get("since", ""))
    rows = list(
        job.events.filter(type="metrics", pk__gt=since)
        .order_by("pk")
        .values_list("pk", "data")[:MAX_POINTS]
    )
    return JsonResponse(
        {
            "id": job.id,
            "status": job.status,
            "status_label": status_label(job.status),
            "active": job.status in FineTuningJob.active_statuses,
            "progress": job.progress,
            "fine_tuned_model": job.fine_tuned_model or None,
            "trained_tokens": job.trained_tokens,
            "error": job.error or None,
            "points": [_point(data) for _, data in rows],
            "last": rows[-1][0] if rows else since,
            "events": [_event(e) for e in _latest_events(job)],
            "checkpoints": [_checkpoint(c) for c in _checkpoints(job)],
        }
    )


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel the job, then back to its page (a message says why when it cannot be)."""
    try:
        jobs.cancel_job(request.user, job_id)
    except NotFound:
        return not_found(request)
    except PlatformError as exc:
        messages.error(request, exc.message)
    return redirect("fine-tuning-job", job_id=job_id)


@login_required
@require_POST
def job_export(request: HttpRequest, job_id: str) -> HttpResponse:
    """Export the job as an int8 copy (merged LoRA); the export job's page follows it, or
    back to the job's page with a message saying why not."""
    try:
        export = jobs.create_export(request.user, job_id, quantize="int8")
    except NotFound:
        return not_found(request)
    except PlatformError as exc:
        messages.error(request, exc.message)
        return redirect("fine-tuning-job", job_id=job_id)
    return redirect("fine-tuning-job", job_id=export.id)


def _exportable(job: FineTuningJob) -> bool:
    """Whether the page offers the export button: a succeeded LoRA fine-tune."""
    return (
        job.task == Task.FINE_TUNE
        and job.status == FineTuneStatus.SUCCEEDED
        and job.result_version_id is not None
        and job.adapter.get("type") != "full"
    )


def _event_id(text: str) -> int:
    """An event id from the query (0 for anything else: "²", a number past bigint)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0


def _latest_events(job: FineTuningJob) -> list[FineTuningEvent]:
    return list(job.events.order_by("-pk")[:EVENTS_SHOWN])


def _checkpoints(job: FineTuningJob) -> list[FineTuningCheckpoint]:
    return list(job.checkpoints.filter(complete=True).order_by("-step"))


def _when(moment: datetime) -> str:
    """In the site's time zone, as the page's other times are shown."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def _point(data: dict[str, Any]) -> list[Any]:
    return [data.get("step"), *(data.get(name) for name in CHART_METRICS)]


def _event(event: FineTuningEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "created_at": _when(event.created_at),
        "level": event.level,
        "type": event.type,
        "message": event.message,
    }


def _checkpoint(checkpoint: FineTuningCheckpoint) -> dict[str, Any]:
    metrics = checkpoint.metrics or {}
    return {
        "id": checkpoint.id,
        "step": checkpoint.step,
        "created_at": _when(checkpoint.created_at),
        "train_loss": metrics.get("train_loss"),
        "valid_loss": metrics.get("valid_loss"),
        "train_mean_token_accuracy": metrics.get("train_mean_token_accuracy"),
        "valid_mean_token_accuracy": metrics.get("valid_mean_token_accuracy"),
    }
