"""``auto_eval``: a fine-tune created with ``"auto_eval": "namespace/suite"`` is evaluated
on that suite once it succeeds, and the run's scores go into the fine-tuned model's card
as ``model-index``.

:func:`register` (called by :class:`evaluation.apps.EvaluationConfig`) plugs three
functions into training and the runs: the check of the suite named at creation, the
start of the run when the fine-tune succeeds, and the card update when that run ends.
"""

from __future__ import annotations

import logging
from typing import Any

from evaluation.models import EvalRun, RunSource
from evaluation.services import catalog, runs
from portal.errors import PlatformError
from portal.models.jobs import JobStatus

logger = logging.getLogger(__name__)


def register() -> None:
    from training.services import jobs

    jobs.on_auto_eval_check(check_suite)
    jobs.on_succeeded(evaluate_fine_tune)
    runs.on_finished(write_card)


def check_suite(user: Any, ref: str) -> str:
    """The suite reference as stored (``namespace/name``); 404 for a suite ``user``
    may not read, as if it did not exist."""
    suite = catalog.resolve_suite(user, ref, "auto_eval")
    return f"{suite.namespace}/{suite.name}"


def evaluate_fine_tune(job: Any) -> EvalRun | None:
    """Start the ``auto_eval`` run of a succeeded fine-tune on its model (None when it
    asked for none). A failure to start is logged on the fine-tune, never raised."""
    if not job.auto_eval or not job.fine_tuned_model or job.created_by is None:
        return None
    try:
        suite = catalog.resolve_suite(job.created_by, job.auto_eval, "auto_eval")
        run = runs.start_run(
            job.created_by,
            suite=suite,
            model=job.fine_tuned_model,
            source=RunSource.AUTO_EVAL,
            owner=job.owner_user or job.owner_org,
            fine_tuning_job_id=job.id,
        )
    except PlatformError as exc:
        job.log(f"auto_eval on {job.auto_eval} could not start: {exc.message}", level="warning")
        return None
    job.log(f"auto_eval: evaluation run {run.pk} on {job.auto_eval} queued", data={"run": run.pk})
    return run


def write_card(run: EvalRun) -> None:
    """Write a succeeded ``auto_eval`` run's scores into its model's card."""
    from portal.services.registry import record_eval_results

    if run.source != RunSource.AUTO_EVAL or run.status != JobStatus.SUCCEEDED:
        return
    if run.model_version is None:
        return
    record_eval_results(run.model_version, model_index_entries(run))


def model_index_entries(run: EvalRun) -> list[dict[str, Any]]:
    """The run's scores as Hugging Face ``model-index`` results: one per task, each
    metric with its value and (in ``args``) its standard error and sample count."""
    entries = []
    suite = run.suite
    source = {"name": f"openmaas evaluation {run.pk}", "url": f"/evaluation/runs/{run.pk}/"}
    for key, metrics in (run.scores.get("tasks") or {}).items():
        values = [
            {
                "type": name,
                "name": name,
                "value": round(float(m["value"]), 6),
                "args": {"stderr": m.get("stderr"), "n": m.get("n")},
            }
            for name, m in metrics.items()
            if isinstance(m, dict) and isinstance(m.get("value"), int | float)
        ]
        entries.append(
            {
                "task": {"type": "text-generation", "name": key},
                "dataset": {"type": key, "name": key, "config": str(suite) if suite else ""},
                "metrics": values,
                "source": source,
            }
        )
    return entries
