"""Leaderboards: a suite's ranking of models, fed by a submission queue, and the
run-versus-run comparison behind it.

A submission is ``pending`` until a leaderboard run slot is free
(``EVAL_LEADERBOARD_CONCURRENCY`` across all boards), then ``running`` with its own run
of the board's suite (``source=leaderboard``, started by
:func:`evaluation.services.runs.start_run` as the submitter), then ``finished`` or
``failed`` as that run ends: :func:`on_run_finished` is a finished-hook of the runs
service (registered by :func:`connect`), and each run that ends frees a slot for the
next pending submission. Standings rank each model's latest finished submission by
the suite's score, with filters on size, license and base model from the model hub.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from evaluation.models import (
    EvalRun,
    EvalSample,
    EvalSuite,
    EvalTask,
    Leaderboard,
    Submission,
    SubmissionStatus,
)
from evaluation.services.catalog import save_new
from portal.errors import Conflict, NotFound, PlatformError
from portal.limits import RateLimited
from portal.models import ModelVersion
from portal.models.accounts import NAMESPACE_RE
from portal.models.jobs import JobStatus
from portal.models.ownership import OwnedModel, Visibility

NAME = re.compile(NAMESPACE_RE)
# Bytes per weight by the dtype a config names (weights are most often 16-bit).
DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}
DEFAULT_DTYPE_BYTES = 2
MAX_SAMPLE_DIFFS = 500
CONCURRENCY = 2  # leaderboard runs at once, unless EVAL_LEADERBOARD_CONCURRENCY says
# Any constant: serialises the queue's advance across processes (a transaction lock).
QUEUE_LOCK = 0x0E7A1B0A
ACTIVE_SUBMISSIONS = (SubmissionStatus.PENDING, SubmissionStatus.RUNNING)
Owned = TypeVar("Owned", bound=OwnedModel)


# --- shared by the boards: owned objects, models ---------------------------------------


def create_owned(instance: Owned, user: Any, owner: Any, visibility: Any) -> Owned:
    """Save ``instance`` (a leaderboard or an arena, named) under ``owner``: 400 for a
    bad name or field, then :func:`evaluation.services.catalog.save_new` (403 for an
    owner ``user`` may not write, 400 for a bad visibility, 409 for a taken name)."""
    name = getattr(instance, "name", "")
    if not isinstance(name, str) or not NAME.match(name):
        raise PlatformError(
            "'name': letters, digits, '-', '_' and '.', starting with a letter or digit.",
            param="name",
        )
    try:
        instance.clean_fields(
            exclude=["owner_user", "owner_org", "created_by", "namespace", "visibility"]
        )
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise PlatformError(f"{field}: {' '.join(messages)}", param=field) from exc
    return save_new(instance, user, owner, str(visibility))


def resolve_model(user: Any, name: Any) -> tuple[str, ModelVersion | None]:
    """``(served name, hub version)`` of a model ``user`` may read (the gateway's
    rules): NotFound (404) otherwise."""
    from evaluation.services.runs import resolve_model as resolve

    return resolve(user, name)


def params_size(version: ModelVersion | None) -> int | None:
    """The number of weights of ``version`` (its base's, for an adapter): the config's
    ``num_parameters`` when given, else estimated from the weights' bytes and dtype."""
    if version is None:
        return None
    if version.base_version is not None:
        version = version.base_version
    config = version.config if isinstance(version.config, dict) else {}
    declared = config.get("num_parameters")
    if isinstance(declared, int) and declared > 0:
        return declared
    if not version.total_bytes:
        return None
    per_weight = DEFAULT_DTYPE_BYTES
    if config.get("quantization_config"):
        per_weight = 1
    else:
        dtype = config.get("torch_dtype") or config.get("dtype")
        per_weight = DTYPE_BYTES.get(str(dtype), DEFAULT_DTYPE_BYTES)
    return int(version.total_bytes // per_weight)


# --- leaderboards and submissions -------------------------------------------------------


def create_leaderboard(
    user: Any,
    owner: Any,
    name: Any,
    suite: EvalSuite,
    *,
    title: str = "",
    description: str = "",
    visibility: str = Visibility.PUBLIC,
) -> Leaderboard:
    """A leaderboard of ``suite`` (which ``user`` must be able to read: 404 otherwise)
    owned by ``owner``; see :func:`create_owned` for the other errors."""
    if not EvalSuite.objects.restrict(user, "read").filter(pk=suite.pk).exists():
        raise NotFound("No such suite.", param="suite")
    board = Leaderboard(
        name=name, suite=suite, title=title, description=description, created_by=user
    )
    return create_owned(board, user, owner, visibility)


def leaderboards_of(user: Any) -> QuerySet[Leaderboard]:
    """The leaderboards ``user`` may read."""
    return Leaderboard.objects.restrict(user, "read").select_related("suite")


def submit(user: Any, board: Leaderboard, model: Any) -> Submission:
    """Enter ``model`` (a name ``user`` may read; 404 otherwise) on ``board``: a pending
    submission, started at once when a run slot is free. Conflict (409) while the same
    model already waits or runs on this board."""
    served, version = resolve_model(user, model)
    with transaction.atomic():
        Leaderboard.objects.select_for_update().filter(pk=board.pk).first()
        waiting = board.submissions.filter(model_name=served, status__in=ACTIVE_SUBMISSIONS)
        if waiting.exists():
            raise Conflict(f"{served} is already queued on this leaderboard.", param="model")
        submission = Submission.objects.create(
            leaderboard=board, model_name=served, model_version=version, submitted_by=user
        )
    advance_submissions()
    submission.refresh_from_db()
    return submission


def advance_submissions() -> int:
    """Start pending submissions, oldest first, while fewer than
    ``EVAL_LEADERBOARD_CONCURRENCY`` run; how many started. Idempotent and safe to call
    from any process (the Celery sweep may call it to catch up)."""
    started = 0
    while _start_next():
        started += 1
    return started


def _start_next() -> bool:
    """Start the oldest pending submission if a slot is free; whether there may be more."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [QUEUE_LOCK])
        running = Submission.objects.filter(status=SubmissionStatus.RUNNING).count()
        if running >= getattr(settings, "EVAL_LEADERBOARD_CONCURRENCY", CONCURRENCY):
            return False
        submission = (
            Submission.objects.select_related("leaderboard__suite", "submitted_by")
            .filter(status=SubmissionStatus.PENDING)
            .order_by("created_at", "pk")
            .first()
        )
        if submission is None:
            return False
        return _start(submission)


def _start(submission: Submission) -> bool:
    """Start the submission's run as its submitter; a refusal fails the submission.
    False when the submitter has too many active runs: it stays pending, and the queue
    waits for the next run to end (or the next sweep)."""
    from evaluation.models import RunSource
    from evaluation.services.runs import start_run

    user = submission.submitted_by
    try:
        if user is None:
            raise PlatformError("The submitter's account is gone.")
        with transaction.atomic():
            run = start_run(
                user,
                suite=submission.leaderboard.suite,
                model=submission.model_name,
                source=RunSource.LEADERBOARD,
            )
    except RateLimited:
        return False
    except PlatformError as exc:
        _finish(submission, SubmissionStatus.FAILED, exc.message)
        return True
    submission.run = run
    submission.status = SubmissionStatus.RUNNING
    submission.save(update_fields=["run", "status"])
    return True


def _finish(submission: Submission, status: str, error: str = "") -> None:
    submission.status = status
    submission.error = error[:2000]
    submission.finished_at = timezone.now()
    submission.save(update_fields=["status", "error", "finished_at"])


def on_run_finished(run: EvalRun) -> None:
    """The runs service's finished-hook: a running submission follows its run
    (``succeeded`` → finished, anything else → failed with the run's error); the slot
    it held goes to the next pending submission."""
    with transaction.atomic():
        running = Submission.objects.select_for_update().filter(
            run_id=run.pk, status=SubmissionStatus.RUNNING
        )
        for submission in running:
            if run.status == JobStatus.SUCCEEDED:
                _finish(submission, SubmissionStatus.FINISHED)
            else:
                _finish(submission, SubmissionStatus.FAILED, run.error or f"The run {run.status}.")
    advance_submissions()


def connect() -> None:
    """Register :func:`on_run_finished` with the runs service (``AppConfig.ready``)."""
    from evaluation.services.runs import on_finished

    on_finished(on_run_finished)


# --- standings ------------------------------------------------------------------------


@dataclass(frozen=True)
class StandingsFilter:
    """Which models a ranking shows: size bounds in weights, a license, and a base model
    (the base itself and the models fine-tuned from it)."""

    min_params: int | None = None
    max_params: int | None = None
    license: str = ""
    base_model: str = ""

    def keeps(self, row: dict[str, Any]) -> bool:
        size = row["params_size"]
        if self.min_params is not None and (size is None or size < self.min_params):
            return False
        if self.max_params is not None and (size is None or size > self.max_params):
            return False
        if self.license and row["license"].lower() != self.license.lower():
            return False
        base = self.base_model
        return not base or base in (row["base_model"], row["model"].partition("@")[0])


def standings(board: Leaderboard, filters: StandingsFilter | None = None) -> list[dict[str, Any]]:
    """The board's ranking: each model's latest finished submission, best suite score
    first (unscored last), numbered from 1 after ``filters``. A row is ``{rank, model,
    model_version, score, stderr, tasks: {task: {metric, value, stderr}}, run,
    submission, params_size, license, base_model, finished_at}``."""
    filters = filters or StandingsFilter()
    finished = (
        board.submissions.filter(status=SubmissionStatus.FINISHED, run__isnull=False)
        .select_related("run", "model_version__repo", "model_version__base_version__repo")
        .order_by("-finished_at", "-pk")
    )
    rows: dict[str, dict[str, Any]] = {}
    for submission in finished:
        if submission.model_name not in rows:
            rows[submission.model_name] = _row(submission)
    kept = sorted(
        (row for row in rows.values() if filters.keeps(row)),
        key=lambda row: (row["score"] is None, -(row["score"] or 0.0), row["model"]),
    )
    for rank, row in enumerate(kept, start=1):
        row["rank"] = rank
    return kept


def _row(submission: Submission) -> dict[str, Any]:
    run = submission.run
    assert run is not None
    suite = (run.scores or {}).get("suite") or {}
    version = submission.model_version
    repo = version.repo if version is not None else None
    base = version.base_version if version is not None else None
    license_ = (repo.license if repo else "") or (base.repo.license if base else "")
    return {
        "rank": 0,
        "model": submission.model_name,
        "model_version": version.number if version is not None else None,
        "score": _number(suite.get("score")),
        "stderr": _number(suite.get("stderr")),
        "tasks": _task_scores(run),
        "run": run.pk,
        "submission": submission.pk,
        "params_size": params_size(version),
        "license": license_,
        "base_model": _base_name(version),
        "finished_at": submission.finished_at,
    }


def _base_name(version: ModelVersion | None) -> str:
    if version is None:
        return ""
    if version.base_version is not None:
        return version.base_version.repo.full_name
    return version.base_model


def _task_scores(run: EvalRun) -> dict[str, dict[str, Any]]:
    """Each task's primary metric: ``{metric, value, stderr}``."""
    scores: dict[str, dict[str, Any]] = {}
    for task, metrics in ((run.scores or {}).get("tasks") or {}).items():
        primary = str(metrics.get("primary") or "")
        metric = metrics.get(primary) if isinstance(metrics.get(primary), dict) else {}
        scores[task] = {
            "metric": primary,
            "value": _number(metric.get("value")),
            "stderr": _number(metric.get("stderr")),
        }
    return scores


def _number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --- comparison -----------------------------------------------------------------------


def readable_runs(user: Any) -> QuerySet[EvalRun]:
    """Runs ``user`` may read, and the runs behind the finished submissions of the
    leaderboards they may read (a ranking's runs are as public as the ranking)."""
    ranked = Submission.objects.filter(
        leaderboard__in=Leaderboard.objects.restrict(user, "read"),
        status=SubmissionStatus.FINISHED,
    ).values("run_id")
    own = EvalRun.objects.restrict(user, "read").values("pk")
    return EvalRun.objects.filter(Q(pk__in=own) | Q(pk__in=ranked)).select_related("suite")


def get_readable_run(user: Any, run_id: Any, param: str) -> EvalRun:
    """The run ``run_id`` from :func:`readable_runs`; NotFound (404) otherwise."""
    run = readable_runs(user).filter(pk=str(run_id)[:40].replace("\x00", "")).first()
    if run is None:
        raise NotFound(f"No such evaluation run: {str(run_id)[:64]}", param=param)
    return run


def compare(
    user: Any, run_a: EvalRun, run_b: EvalRun, *, task: str = "", limit: int = 100
) -> dict[str, Any]:
    """``run_b`` against ``run_a`` on the tasks both scored (``task`` alone when given):
    per task each metric's values and delta (b − a), and per sample (same task and
    document) the primary metric's differences — how many samples ``b`` gained and
    lost, a two-sided sign test on those, and up to ``limit`` differing samples.
    NotFound (404) for a run ``user`` may not read; Conflict (409) for one not scored."""
    for param, run in (("a", run_a), ("b", run_b)):
        get_readable_run(user, run.pk, param)
        if not (run.scores or {}).get("tasks"):
            raise Conflict(f"The run {run.pk} has no scores yet.", param=param)
    tasks_a, tasks_b = run_a.scores["tasks"], run_b.scores["tasks"]
    common = [name for name in tasks_a if name in tasks_b and (not task or name == task)]
    if task and not common:
        raise NotFound(f"Both runs have no task '{task[:200]}'.", param="task")
    limit = max(0, min(limit, MAX_SAMPLE_DIFFS))
    suite_a = (run_a.scores.get("suite") or {}).get("score")
    suite_b = (run_b.scores.get("suite") or {}).get("score")
    return {
        "a": run_a.pk,
        "b": run_b.pk,
        "model_a": run_a.model_name,
        "model_b": run_b.model_name,
        "suite": _pair(suite_a, suite_b),
        "tasks": [_compare_task(run_a, run_b, name, limit) for name in common],
    }


def _pair(a: Any, b: Any) -> dict[str, float | None]:
    a, b = _number(a), _number(b)
    return {"a": a, "b": b, "delta": None if a is None or b is None else b - a}


def _compare_task(run_a: EvalRun, run_b: EvalRun, name: str, limit: int) -> dict[str, Any]:
    scores_a, scores_b = run_a.scores["tasks"][name], run_b.scores["tasks"][name]
    primary = str(scores_a.get("primary") or scores_b.get("primary") or "")
    metrics = {
        metric: _pair(value.get("value"), scores_b[metric].get("value"))
        for metric, value in scores_a.items()
        if isinstance(value, dict) and isinstance(scores_b.get(metric), dict)
    }
    return {
        "task": name,
        "primary": primary,
        "metrics": metrics,
        **_sample_diffs(run_a, run_b, name, primary, limit),
    }


def _task_row(name: str) -> EvalTask | None:
    namespace, _, task_name = name.partition("/")
    return EvalTask.objects.filter(namespace=namespace, name=task_name).first()


def _sample_diffs(
    run_a: EvalRun, run_b: EvalRun, name: str, primary: str, limit: int
) -> dict[str, Any]:
    """Samples of the same document whose primary metric differs between the runs."""
    from scipy.stats import binomtest

    task = _task_row(name)
    fields = ("doc_index", "prompt", "target", "extracted", "metrics", "error")
    by_doc: dict[int, dict[str, Any]] = {}
    b_rows: dict[int, dict[str, Any]] = {}
    if task is not None:
        for row in EvalSample.objects.filter(run=run_a, task=task).values(*fields):
            by_doc[row["doc_index"]] = row
        for row in EvalSample.objects.filter(run=run_b, task=task).values(*fields):
            b_rows[row["doc_index"]] = row
    common = sorted(set(by_doc) & set(b_rows))
    gained = lost = 0
    differing: list[dict[str, Any]] = []
    for doc in common:
        value_a = _number((by_doc[doc]["metrics"] or {}).get(primary)) or 0.0
        value_b = _number((b_rows[doc]["metrics"] or {}).get(primary)) or 0.0
        if value_a == value_b:
            continue
        gained, lost = gained + (value_b > value_a), lost + (value_b < value_a)
        if len(differing) < limit:
            differing.append(_diff(by_doc[doc], b_rows[doc], value_a, value_b))
    flips = gained + lost
    p_value = float(binomtest(gained, flips).pvalue) if flips else None
    return {
        "n_common": len(common),
        "gained": gained,
        "lost": lost,
        "p_value": p_value,
        "samples": differing,
    }


def _diff(a: dict[str, Any], b: dict[str, Any], value_a: float, value_b: float) -> dict[str, Any]:
    return {
        "doc_index": a["doc_index"],
        "prompt": str(a["prompt"])[:2000],
        "target": a["target"],
        "a": {"extracted": a["extracted"], "value": value_a, "error": a["error"]},
        "b": {"extracted": b["extracted"], "value": value_b, "error": b["error"]},
    }


__all__ = [
    "StandingsFilter",
    "advance_submissions",
    "compare",
    "connect",
    "create_leaderboard",
    "create_owned",
    "get_readable_run",
    "leaderboards_of",
    "on_run_finished",
    "params_size",
    "readable_runs",
    "resolve_model",
    "standings",
    "submit",
]
