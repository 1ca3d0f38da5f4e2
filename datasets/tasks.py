"""Celery entry points of the dataset hub; the work is in :mod:`datasets.services.jobs`."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from datasets.models import DatasetJob
from datasets.services import jobs
from portal.jobs import queued_since, requeue_stale, run_job


@shared_task(name="datasets.tasks.run_dataset_job", ignore_result=True)
def run_dataset_job(job_id: int) -> None:
    run_job(DatasetJob, job_id, jobs.handle)
    job = DatasetJob.objects.filter(pk=job_id).first()
    if job is not None:  # also a job cancelled while it was queued
        jobs.release_finished_uses(job)


@shared_task(name="datasets.tasks.sweep_jobs", ignore_result=True)
def sweep_jobs() -> list[int]:
    """Requeue jobs whose worker went silent and resend jobs whose message was lost."""
    requeue_stale(DatasetJob, settings.DATASET_JOB_SILENT_S)
    pending = queued_since(DatasetJob, settings.DATASET_JOB_SILENT_S / 2)
    for job_id in pending:
        run_dataset_job.delay(job_id)
    return pending
