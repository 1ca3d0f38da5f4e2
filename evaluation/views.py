"""The evaluation pages: the overview (suites, tasks, leaderboards, arenas, the user's
runs), the new-run form, a run's page (progress while active, scores ± stderr with a
chart per task, the samples, the reproducibility record), a task's and a suite's page,
a leaderboard (standings with filters, the submission form and queue), the comparison
of two runs, and an arena (prompt → two anonymous answers → vote → names revealed,
ratings with intervals).

Views are thin: reads go through ``Model.objects.restrict(user)`` (what the user may not
read is a 404), writes through :mod:`evaluation.services`. A run's page polls
:func:`run_data` (JSON, the browser session) every ~2 s while the run is active.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from evaluation.forms import BattleForm, RunForm, StandingsFilter, SubmitForm, VoteForm
from evaluation.models import (
    Arena,
    Battle,
    EvalRun,
    EvalSample,
    EvalSuite,
    EvalTask,
    Leaderboard,
    SubmissionStatus,
    Winner,
)
from evaluation.services import arena as arenas
from evaluation.services import catalog, leaderboards, runs
from portal.auth import acting_user
from portal.errors import NotFound, PlatformError
from portal.models.jobs import JobStatus
from portal.views import not_found

RECENT = 20
SAMPLES_PER_PAGE = 20
POLL_MS = 2000
STATUS_LABELS: dict[str, Any] = {
    JobStatus.QUEUED: _("排队中"),
    JobStatus.RUNNING: _("评测中"),
    JobStatus.SUCCEEDED: _("已完成"),
    JobStatus.FAILED: _("失败"),
    JobStatus.CANCELLED: _("已取消"),
}
SUBMISSION_LABELS: dict[str, Any] = {
    SubmissionStatus.PENDING: _("等待中"),
    SubmissionStatus.RUNNING: _("评测中"),
    SubmissionStatus.FINISHED: _("已完成"),
    SubmissionStatus.FAILED: _("失败"),
}
WINNER_LABELS: dict[str, Any] = {
    Winner.A: _("A 更好"),
    Winner.B: _("B 更好"),
    Winner.TIE: _("平局"),
    Winner.BOTH_BAD: _("都不好"),
}


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def _readable(model: Any, request: HttpRequest, **lookup: Any) -> Any:
    """The row the user may read, else a 404 (a private thing does not exist to others)."""
    return get_object_or_404(model.objects.restrict(request.user, "read"), **lookup)


def _readable_run(request: HttpRequest, run_id: str) -> EvalRun:
    """A run the user may read: their own, their organisations', or one ranked on a
    leaderboard they may read (a ranking's runs are as public as the ranking)."""
    return get_object_or_404(
        leaderboards.readable_runs(request.user).select_related("task", "endpoint"), pk=run_id
    )


# ---------------------------------------------------------------- overview and catalogue


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Suites, tasks, leaderboards and arenas the user may read; the user's recent runs."""
    user = acting_user(request)
    catalog.ensure_builtin()
    mine = EvalRun.objects.restrict(user, "write").select_related("suite", "task", "endpoint")
    context = {
        "suites": EvalSuite.objects.restrict(user).prefetch_related("members__task"),
        "tasks": EvalTask.objects.restrict(user),
        "leaderboards": Leaderboard.objects.restrict(user).select_related("suite"),
        "arenas": Arena.objects.restrict(user),
        "runs": [(run, status_label(run.status)) for run in mine[:RECENT]],
    }
    return render(request, "evaluation/home.html", context)


@login_required
def task_detail(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """A task's YAML, its parsed settings and the suites the user may read that hold it."""
    task = _readable(EvalTask, request, namespace=namespace, name=name)
    suites = EvalSuite.objects.restrict(request.user).filter(members__task=task).distinct()
    return render(request, "evaluation/task.html", {"task": task, "suites": suites})


@login_required
def suite_detail(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """A suite's tasks with their weights, its aggregation and its YAML."""
    suite = _readable(EvalSuite, request, namespace=namespace, name=name)
    members = suite.members.select_related("task")
    return render(request, "evaluation/suite.html", {"suite": suite, "members": members})


# ---------------------------------------------------------------- runs


@login_required
def run_new(request: HttpRequest) -> HttpResponse:
    """Start a run of a suite or a task on a model or an endpoint; its page follows it."""
    user = acting_user(request)
    catalog.ensure_builtin()
    initial = {key: request.GET[key] for key in ("target", "model") if key in request.GET}
    form = RunForm(user, request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            run = runs.start_run(user, **form.arguments())
        except PlatformError as exc:
            form.show_error(exc.param, exc.message)
        else:
            return redirect("evaluation-run", run_id=run.id)
    return render(request, "evaluation/run_new.html", {"form": form})


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    """A run's page; a run the user may not read is a 404."""
    run = _readable_run(request, run_id)
    tasks = _score_rows(run)
    task_filter = request.GET.get("task", "")
    samples = EvalSample.objects.filter(run=run).select_related("task")
    if task_filter:
        namespace, _slash, name = task_filter.partition("/")
        samples = samples.filter(task__namespace=namespace, task__name=name)
    page = Paginator(samples.order_by("task_id", "doc_index"), SAMPLES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        "run": run,
        "status_label": status_label(run.status),
        "active": run.status in EvalRun.active_statuses,
        "can_cancel": EvalRun.objects.restrict(request.user, "write").filter(pk=run.pk).exists(),
        "percent": _percent(run),
        "tasks": tasks,
        "suite_score": (run.scores or {}).get("suite"),
        "charts": [_chart(row) for row in tasks],
        "page": page,
        "samples": [_sample(s) for s in page],
        "task_filter": task_filter,
        "record": run.record or {},
        "record_json": json.dumps(run.record or {}, indent=2, ensure_ascii=False),
        "poll_ms": POLL_MS,
        "status_labels": {str(k): str(v) for k, v in STATUS_LABELS.items()},
    }
    return render(request, "evaluation/run.html", context)


@login_required
def run_data(request: HttpRequest, run_id: str) -> JsonResponse:
    """What a run's page refreshes while it is active: status, progress, sample counts."""
    run = leaderboards.readable_runs(request.user).filter(pk=run_id).first()
    if run is None:
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return JsonResponse(
        {
            "id": run.id,
            "status": run.status,
            "status_label": status_label(run.status),
            "active": run.status in EvalRun.active_statuses,
            "progress": run.progress,
            "percent": _percent(run),
            "done_samples": run.done_samples,
            "total_samples": run.total_samples,
            "error": run.error or None,
        }
    )


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    """Cancel the run, then back to its page (a message says why when it cannot be)."""
    run = _readable_run(request, run_id)
    try:
        runs.cancel_run(request.user, run)
    except NotFound:
        return not_found(request)
    except PlatformError as exc:
        messages.error(request, exc.message)
    return redirect("evaluation-run", run_id=run.id)


def _percent(run: EvalRun) -> int:
    if run.total_samples:
        return round(100 * run.done_samples / run.total_samples)
    return round((run.progress or 0.0) * 100)


def _score_rows(run: EvalRun) -> list[dict[str, Any]]:
    """Each task's metrics as ``{"task", "primary", "n_errors", "metrics": [{name, value,
    stderr, n}]}``, the primary metric first."""
    rows = []
    for name, entry in ((run.scores or {}).get("tasks") or {}).items():
        primary = entry.get("primary", "")
        metrics = [
            {"name": key, **value}
            for key, value in entry.items()
            if isinstance(value, dict) and "value" in value
        ]
        metrics.sort(key=lambda m: m["name"] != primary)
        rows.append(
            {
                "task": name,
                "primary": primary,
                "n_errors": entry.get("n_errors", 0),
                "metrics": metrics,
            }
        )
    return rows


def _chart(row: dict[str, Any]) -> dict[str, Any]:
    metrics = [m for m in row["metrics"] if isinstance(m.get("value"), int | float)]
    return {
        "task": row["task"],
        "labels": [m["name"] for m in metrics],
        "values": [m["value"] for m in metrics],
        "stderr": [m.get("stderr") for m in metrics],
    }


def _sample(sample: EvalSample) -> dict[str, Any]:
    return {
        "task": str(sample.task),
        "doc_index": sample.doc_index,
        "prompt": sample.prompt,
        "target": sample.target,
        "output": sample.output,
        "extracted": sample.extracted,
        "metrics": sample.metrics,
        "error": sample.error,
    }


# ---------------------------------------------------------------- leaderboards


@login_required
def leaderboard(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """Standings (filtered as the query asks), the submission form and the queue."""
    user = acting_user(request)
    board = _readable(Leaderboard, request, namespace=namespace, name=name)
    filters = StandingsFilter(request.GET or None)
    chosen = leaderboards.StandingsFilter(**filters.filters())
    rows = [_standing(row) for row in leaderboards.standings(board, chosen)]
    submissions = board.submissions.select_related("run")[:RECENT]
    context = {
        "board": board,
        "filters": filters,
        "rows": rows,
        "task_names": sorted({task for row in rows for task in row["tasks"]}),
        "submit_form": SubmitForm(user),
        "submissions": [(s, str(SUBMISSION_LABELS.get(s.status, s.status))) for s in submissions],
    }
    return render(request, "evaluation/leaderboard.html", context)


@login_required
@require_POST
def leaderboard_submit(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """Enter a model; back to the board, whose queue shows the submission."""
    user = acting_user(request)
    board = _readable(Leaderboard, request, namespace=namespace, name=name)
    form = SubmitForm(user, request.POST)
    if form.is_valid():
        try:
            leaderboards.submit(user, board, form.cleaned_data["model"])
        except NotFound:
            return not_found(request)
        except PlatformError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("已提交，评测完成后会出现在排行榜上。"))
    else:
        messages.error(request, _("请选择一个模型。"))
    return redirect("evaluation-leaderboard", namespace=namespace, name=name)


def _standing(row: dict[str, Any]) -> dict[str, Any]:
    """A standings row with each task's primary value as a number and the size shown."""
    tasks = {task: entry.get("value") for task, entry in (row.get("tasks") or {}).items()}
    return {**row, "tasks": tasks, "size": _size(row.get("params_size"))}


def _size(count: int | None) -> str:
    """A parameter count as people write it: 1.1B, 350M, 12K."""
    if not count:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


@login_required
def compare(request: HttpRequest) -> HttpResponse:
    """Two runs side by side: per-task deltas and the samples whose result flipped."""
    user = acting_user(request)
    run_a = _readable_run(request, request.GET.get("a", ""))
    run_b = _readable_run(request, request.GET.get("b", ""))
    try:
        result = leaderboards.compare(user, run_a, run_b, task=request.GET.get("task", ""))
    except NotFound:
        return not_found(request)
    except PlatformError as exc:
        return render(
            request,
            "evaluation/compare.html",
            {"run_a": run_a, "run_b": run_b, "error": exc.message},
            status=exc.status,
        )
    return render(
        request, "evaluation/compare.html", {"run_a": run_a, "run_b": run_b, "result": result}
    )


# ---------------------------------------------------------------- arena


@login_required
def arena(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """The arena: a prompt form; the user's battle of ``?battle=`` (answers anonymous until
    the vote, then the models' names); the ratings with their intervals."""
    board = _readable(Arena, request, namespace=namespace, name=name)
    battle = None
    if request.GET.get("battle"):
        battle = _own_battle(request, request.GET["battle"])
        if battle.arena_id != board.pk:
            raise Http404
    context = {
        "arena": board,
        "form": BattleForm(),
        "battle": battle,
        "winner_label": str(WINNER_LABELS.get(battle.winner, "")) if battle else "",
        "winners": [(value, str(label)) for value, label in WINNER_LABELS.items()],
        "ratings": arenas.arena_ratings(board),
    }
    return render(request, "evaluation/arena.html", context)


@login_required
@require_POST
def battle_new(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """Start a battle on the prompt; the arena page shows its two anonymous answers."""
    user = acting_user(request)
    board = _readable(Arena, request, namespace=namespace, name=name)
    here = reverse("evaluation-arena", args=[namespace, name])
    form = BattleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("请输入问题。"))
        return redirect(here)
    try:
        battle = arenas.start_battle(user, board, form.cleaned_data["prompt"])
    except PlatformError as exc:
        messages.error(request, exc.message)
        return redirect(here)
    return redirect(f"{here}?battle={battle.id}")


@login_required
@require_POST
def battle_vote(request: HttpRequest, battle_id: str) -> HttpResponse:
    """Vote once on one's own battle; the arena page then reveals the two models."""
    user = acting_user(request)
    battle = _own_battle(request, battle_id)
    form = VoteForm(request.POST)
    if form.is_valid():
        try:
            arenas.vote(user, battle, form.cleaned_data["winner"])
        except NotFound:
            return not_found(request)
        except PlatformError as exc:
            messages.error(request, exc.message)
    else:
        messages.error(request, _("无效的投票。"))
    here = reverse("evaluation-arena", args=[battle.arena.namespace, battle.arena.name])
    return redirect(f"{here}?battle={battle.id}")


def _own_battle(request: HttpRequest, battle_id: str) -> Battle:
    """The user's own battle in an arena they may read (anyone else's is a 404)."""
    try:
        return arenas.get_battle(request.user, battle_id)
    except NotFound:
        raise Http404 from None
