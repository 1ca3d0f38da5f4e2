"""Celery entry points of the evaluation sub-platform; the work is in
:mod:`evaluation.services.runs`."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from evaluation.models import EvalRun
from evaluation.services import leaderboards, runs
from portal.jobs import queued_since, requeue_stale, run_job
from portal.models.jobs import JobStatus


@shared_task(name="evaluation.tasks.run_eval", ignore_result=True)
def run_eval(run_id: str) -> None:
    """Run (or resume) one evaluation; once it has ended, revoke its key and tell the
    finished hooks (leaderboards, auto_eval)."""
    run_job(EvalRun, run_id, runs.handle)  # type: ignore[arg-type]
    run = EvalRun.objects.filter(pk=run_id).first()
    if run is not None and run.is_terminal:
        runs.finalize(run)


@shared_task(name="evaluation.tasks.sweep_runs", ignore_result=True)
def sweep_runs() -> list[str]:
    """Requeue runs whose worker went silent, resend runs whose message was lost,
    finalise runs that ended without their worker (given up after too many attempts), and
    start leaderboard submissions waiting for a free slot."""
    requeue_stale(EvalRun, settings.EVAL_RUN_SILENT_S)
    pending = queued_since(EvalRun, settings.EVAL_RUN_SILENT_S / 2)
    for run_id in pending:
        run_eval.delay(run_id)
    ended = EvalRun.objects.filter(status__in=JobStatus.TERMINAL).exclude(
        result__has_key="finalized"
    )
    for run in ended[:100]:
        runs.finalize(run)
    leaderboards.advance_submissions()
    return [str(run_id) for run_id in pending]
