"""Celery tasks of compliance reports; the work is in
:mod:`governance.services.compliance`. Importing this module also registers the
evaluation finished-hook, so a worker advances a report as soon as its run ends (the
sweep is the backstop)."""

from __future__ import annotations

from celery import shared_task

from governance.models import ComplianceReport
from governance.services import compliance

compliance.connect()


@shared_task(name="governance.jobs.compliance.advance_report", ignore_result=True)
def advance_report(report_id: str) -> None:
    """Advance one report (queued when it is created)."""
    report = ComplianceReport.objects.filter(report_id=report_id).first()
    if report is not None:
        compliance.advance(report)


@shared_task(name="governance.jobs.compliance.sweep_reports", ignore_result=True)
def sweep_reports() -> int:
    """Advance every pending or running report (beat, every few seconds)."""
    return compliance.advance_active()
