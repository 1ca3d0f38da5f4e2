"""Evaluation runs: admission, the worker's handler, cancellation, reading.

A run evaluates a suite (or one task) on a model served by the pool, through the gateway
with a key of the run's creator made for the attempt, or on an external endpoint. It is
a job (:mod:`portal.jobs`): :func:`handle` loads each task's documents, builds the
requests, skips the samples a previous attempt stored, sends the rest concurrently
(:func:`evaluation.harness.execute.run_task`, on an event loop in a thread of its own
while this thread stores finished samples and beats), then computes every metric with a
bootstrap standard error from the stored samples, the suite's aggregate, and the
reproducibility record. Equal inputs give equal ``scores``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from evaluation.models import Endpoint, EvalRun, EvalSample, EvalSuite, EvalTask, RunSource
from evaluation.services import catalog, crypto, endpoints
from portal.errors import NotFound, PermissionDenied, PlatformError
from portal.jobs import JobCancelled, JobContext, JobLost, request_cancel
from portal.limits import RateLimited
from portal.models import ModelRepo, ModelVersion, Visibility
from portal.models.jobs import JobStatus

logger = logging.getLogger(__name__)

BUILTIN_DATA = catalog.BUILTIN_DIR / "data"
DEFAULT_PARAMS: dict[str, Any] = {
    "limit": None,
    "temperature": 0.0,
    "max_tokens": None,
    "concurrency": 8,
    "batch_size": 16,
    "seed": 1234,
}
# (low, high) of each integer parameter.
INT_PARAMS = {
    "limit": (1, 1_000_000),
    "max_tokens": (1, 4096),
    "concurrency": (1, 64),
    "batch_size": (1, 128),
    "seed": (0, 2**31 - 1),
}
CLIENT_TIMEOUT_S = 120
ROUTE_WAIT_S = 120.0
STOP_GRACE_S = 30.0

FinishedHook = Callable[[EvalRun], None]
_finished_hooks: list[FinishedHook] = []


# --- parameters and targets -----------------------------------------------------------


def check_params(params: Any) -> dict[str, Any]:
    """The run's parameters with defaults filled in; a 400 naming ``params.<key>`` for
    an unknown key or a value out of range."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise PlatformError("'params' must be an object.", param="params")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise PlatformError(f"params.{unknown[0][:40]}: unknown parameter.", param="params")
    clean = {**DEFAULT_PARAMS, **params}
    for name, (low, high) in INT_PARAMS.items():
        value = clean[name]
        if value is None and name in ("limit", "max_tokens"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PlatformError(
                f"params.{name}: an integer from {low} to {high}.", param=f"params.{name}"
            )
    temperature = clean["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise PlatformError("params.temperature: a number from 0 to 2.", param="params")
    if not 0.0 <= float(temperature) <= 2.0:
        raise PlatformError("params.temperature: a number from 0 to 2.", param="params")
    clean["temperature"] = float(temperature)
    return clean


def resolve_model(user: Any, name: Any) -> tuple[str, ModelVersion | None]:
    """``(served name, hub version)`` of a model ``user`` may read, as the gateway
    decides: a hub model ``owner/name`` (its newest version) or ``owner/name@N``, or a
    fine-tune's name. NotFound (404, ``model_not_found``) otherwise."""
    if not isinstance(name, str) or not name.strip() or len(name) > 300:
        raise PlatformError("'model' must be a model name.", param="model")
    name = name.strip()
    version = _fine_tune_version(user, name) if name.startswith("ft:") else None
    served = name
    if version is None and not name.startswith("ft:"):
        full, _, number = name.partition("@")
        namespace, _, repo_name = full.partition("/")
        repo = ModelRepo.objects.restrict(user, "read").filter(namespace=namespace, name=repo_name)
        found = repo.first()
        if found is not None:
            versions = found.versions.order_by("-number")
            digits = number.removeprefix("v")
            ok = digits.isdigit() and len(digits) < 10
            version = versions.filter(number=int(digits)).first() if ok else None
            version = version if number else versions.first()
            served = full
    if version is None:
        raise NotFound(
            f"The model '{name[:200]}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return served, version


def _fine_tune_version(user: Any, name: str) -> ModelVersion | None:
    from training.services.jobs import jobs_of

    job = jobs_of(user).filter(fine_tuned_model=name).select_related("result_version").first()
    return job.result_version if job is not None else None


# --- admission ------------------------------------------------------------------------


def start_run(
    user: Any,
    *,
    suite: EvalSuite | str | None = None,
    task: EvalTask | str | None = None,
    model: str | None = None,
    endpoint: Endpoint | str | None = None,
    params: dict[str, Any] | None = None,
    source: str = RunSource.MANUAL,
    owner: Any = None,
    visibility: str = Visibility.PRIVATE,
    fine_tuning_job_id: str = "",
) -> EvalRun:
    """Admit a run of ``suite`` or ``task`` on ``model`` (through the gateway) or
    ``endpoint``, and queue it once the transaction commits.

    Raises a 400 when not exactly one of suite/task and one of model/endpoint is given
    or a parameter is wrong, NotFound (404) for anything ``user`` may not read (the
    model by the gateway's rules), PermissionDenied for an owner ``user`` may not write,
    429 past ``EVAL_MAX_ACTIVE_RUNS`` active manual runs."""
    _exactly_one(suite=suite, task=task)
    _exactly_one(model=model, endpoint=endpoint)
    owner = owner or user
    catalog.check_owner(user, owner)
    run = EvalRun(
        suite=_readable(user, suite, EvalSuite, catalog.resolve_suite, "suite"),
        task=_readable(user, task, EvalTask, catalog.resolve_task, "task"),
        params=check_params(params),
        source=source if source in RunSource.values else RunSource.MANUAL,
        fine_tuning_job_id=fine_tuning_job_id[:40],
        visibility=visibility if visibility in Visibility.values else Visibility.PRIVATE,
        created_by=user,
    )
    run.set_owner(owner)
    if run.suite is not None and not run.suite.members.exists():
        raise PlatformError(f"The suite {run.suite} has no tasks.", param="suite")
    if endpoint is not None:
        run.endpoint = endpoints.resolve_endpoint(user, endpoint)
        run.model_name = run.endpoint.model
    else:
        run.model_name, run.model_version = resolve_model(user, model)
    _save_admitted(run, user)
    transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _exactly_one(**given: Any) -> None:
    named = [name for name, value in given.items() if value not in (None, "")]
    if len(named) != 1:
        names = " or ".join(f"'{name}'" for name in given)
        raise PlatformError(f"Give exactly one of {names}.", param=next(iter(given)))


def _readable(user: Any, ref: Any, model: type, resolve: Callable[..., Any], param: str) -> Any:
    if ref in (None, ""):
        return None
    if isinstance(ref, model):
        if not model.objects.restrict(user, "read").filter(pk=ref.pk).exists():  # type: ignore[attr-defined]
            raise NotFound(f"No such evaluation {param}: {ref}", param=param)
        return ref
    return resolve(user, ref, param)


def _save_admitted(run: EvalRun, user: Any) -> None:
    """Count the user's active runs and save under a lock on the user's row, so two
    concurrent starts cannot both pass the limit."""
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        active = EvalRun.objects.filter(
            created_by=user, status__in=JobStatus.ACTIVE, source=RunSource.MANUAL
        ).count()
        # Runs that a fine-tune or a leaderboard queues were admitted there; only the
        # user's own starts count against the limit.
        if run.source == RunSource.MANUAL and active >= settings.EVAL_MAX_ACTIVE_RUNS:
            raise RateLimited(
                f"You have {active} active evaluation runs, the most allowed "
                f"({settings.EVAL_MAX_ACTIVE_RUNS}); wait for one to finish.",
                code="rate_limit_exceeded",
            )
        run.save(force_insert=True)
        target = run.endpoint or run.model_name
        run.log(f"Run of {run.suite or run.task} on {target} queued", data={"params": run.params})


def _enqueue(run_id: str) -> None:
    from evaluation.tasks import run_eval

    run_eval.delay(run_id)


# --- cancelling, finishing ------------------------------------------------------------


def cancel_run(user: Any, run: EvalRun) -> EvalRun:
    """Cancel a queued run at once, ask a running one to stop (it keeps what it scored).
    NotFound for a run ``user`` may not change; Conflict (409) once it has ended."""
    if not EvalRun.objects.restrict(user, "write").filter(pk=run.pk).exists():
        raise NotFound(f"No such evaluation run: {run.pk}", param="id")
    run = request_cancel(run)  # type: ignore[assignment]
    if run.is_terminal:
        finalize(run)
    return run


def on_finished(hook: FinishedHook) -> None:
    """Register ``hook(run)``, called once after a run reaches a final state. Hooks
    must not raise (an exception is logged and the others still run)."""
    if hook not in _finished_hooks:
        _finished_hooks.append(hook)


def finalize(run: EvalRun) -> bool:
    """Once per run that ended: revoke its gateway key and call the finished hooks.
    False when the run is still active or was finalised already."""
    claimed = (
        EvalRun.objects.filter(pk=run.pk, status__in=JobStatus.TERMINAL)
        .exclude(result__has_key="finalized")
        .update(result={**(run.result or {}), "finalized": True})
    )
    if not claimed:
        return False
    run.refresh_from_db()
    _revoke_key(run)
    for hook in list(_finished_hooks):
        try:
            hook(run)
        except Exception:
            logger.exception("an evaluation finished-hook failed for %s", run.pk)
    return True


def _revoke_key(run: EvalRun) -> None:
    from portal.services.keys import revoke_api_key

    if run.api_key_id is None or run.created_by_id is None:
        return
    with contextlib.suppress(NotFound):  # the key or its user is gone: nothing to revoke
        revoke_api_key(run.created_by, run.api_key_id)
    EvalRun.objects.filter(pk=run.pk).update(api_key_encrypted="")


# --- reading --------------------------------------------------------------------------


def runs_of(user: Any) -> QuerySet[EvalRun]:
    """The runs ``user`` may read, with what lists show."""
    return EvalRun.objects.restrict(user, "read").select_related(
        "suite", "task", "endpoint", "model_version__repo"
    )


def get_run(user: Any, run_id: str, action: str = "read") -> EvalRun:
    """The run ``run_id`` if ``user`` may ``action`` it; NotFound (404) otherwise."""
    found = runs_of(user) if action == "read" else EvalRun.objects.restrict(user, "write")
    run = found.filter(pk=str(run_id)[:40]).first()
    if run is None:
        raise NotFound(f"No such evaluation run: {str(run_id)[:64]}", param="id")
    return run


def samples(run: EvalRun, task: str | None = None) -> QuerySet[EvalSample]:
    """The run's stored samples in task then document order (of task ``namespace/name``
    when given)."""
    rows = EvalSample.objects.filter(run=run).select_related("task")
    if task:
        namespace, _, name = task.partition("/")
        rows = rows.filter(task__namespace=namespace, task__name=name)
    return rows.order_by("task__namespace", "task__name", "doc_index")


def run_tasks(run: EvalRun) -> list[tuple[EvalTask, float]]:
    """The tasks a run evaluates, in order, with their suite weights."""
    if run.suite is not None:
        return catalog.suite_tasks(run.suite)
    assert run.task is not None  # start_run gives one of them
    return [(run.task, 1.0)]


# --- the worker's handler -------------------------------------------------------------


@dataclass
class Target:
    """Where requests go: an OpenAI-compatible base URL, its key and model name."""

    base_url: str
    api_key: str
    model: str
    # The gateway and its key for the judging model of judge tasks (None: no judge task).
    judge_url: str | None = None
    judge_key: str | None = None


@dataclass
class Plan:
    """One task of a run, ready to execute: its spec, instances and data hashes."""

    task: EvalTask
    spec: Any
    instances: list[Any]
    data_sha256: str
    n_docs: int
    pending: list[Any] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.task.namespace}/{self.task.name}"


def handle(run: EvalRun, ctx: JobContext) -> dict[str, Any]:
    """The :func:`portal.jobs.run_job` handler of a run (idempotent: resumes). A
    PlatformError (bad data, an unreachable endpoint, garbage answers) fails the run
    with its message; its code is kept in ``error_code``."""
    try:
        return _evaluate(run, ctx)
    except PlatformError as exc:
        EvalRun.objects.filter(pk=run.pk).update(error_code=exc.code[:64])
        raise


def _evaluate(run: EvalRun, ctx: JobContext) -> dict[str, Any]:
    members = run_tasks(run)
    plans = [prepare(run, task) for task, _ in members]
    total = sum(len(plan.instances) for plan in plans)
    record = build_record(run, plans)
    EvalRun.objects.filter(pk=run.pk).update(total_samples=total, record=record)
    target = connect(run)
    progress = Progress(run, ctx, total)
    if run.endpoint is None:
        wait_until_routed(target, progress)
    for plan in plans:
        stored = set(
            EvalSample.objects.filter(run=run, task=plan.task).values_list("doc_index", flat=True)
        )
        plan.pending = [i for i in plan.instances if i.doc_index not in stored]
        progress.add(len(plan.instances) - len(plan.pending))
        if stored:
            ctx.log(f"{plan.key}: {len(stored)} samples already stored; resuming")
        if plan.pending:
            execute(run, plan, target, progress)
    scores = compute_scores(run, members, plans)
    EvalRun.objects.filter(pk=run.pk).update(scores=scores, done_samples=total)
    suite = scores.get("suite") or {}
    return {"score": suite.get("score"), "samples": total}


def prepare(run: EvalRun, task: EvalTask) -> Plan:
    """Load a task's documents and build its instances with the run's decoding; a
    DataError (400) for data of the wrong shape, SpecError/TemplateError for a spec or
    template that does not fit."""
    from evaluation.harness.scoring import build_instances
    from evaluation.harness.spec import TaskSpec

    spec = TaskSpec.from_json(task.spec)
    dataset = dataclasses.asdict(spec.dataset)
    docs, data_sha = load_task_docs(run, dataset, spec.dataset.split)
    docs = docs[: settings.EVAL_MAX_DOCS]
    fewshot_docs = None
    if spec.fewshot_split and spec.num_fewshot and spec.dataset.hub:
        fewshot_docs, _ = load_task_docs(run, dataset, spec.fewshot_split)
    params = run.params or {}
    limits = [x for x in (spec.limit, params.get("limit"), settings.EVAL_MAX_DOCS) if x]
    instances = build_instances(
        spec,
        docs,
        fewshot_docs,
        seed=params.get("seed"),
        temperature=params.get("temperature"),
        max_tokens=params.get("max_tokens"),
        limit=min(limits),
    )
    return Plan(task, spec, instances, data_sha, len(instances))


def load_task_docs(run: EvalRun, dataset: dict[str, Any], split: str) -> tuple[list[Any], str]:
    """``(docs, sha256 of the file)`` of a task's dataset: a built-in file or a file of a
    dataset hub version the run's creator may read (which must be ready)."""
    from evaluation.harness.importers import DataError, load_docs

    layout = dataset.get("layout") or None
    if dataset.get("builtin"):
        path = (BUILTIN_DATA / str(dataset["builtin"])).resolve()
        if not path.is_relative_to(BUILTIN_DATA.resolve()) or not path.is_file():
            raise DataError(
                f"no built-in data file '{dataset['builtin']}'", field="dataset.builtin"
            )
        return load_docs(path, layout), _sha256(path)
    with tempfile.TemporaryDirectory(prefix="openmaas-eval-") as tmp:
        path = _download_hub_file(run, dataset, split, Path(tmp))
        return load_docs(path, layout), _sha256(path)


def _download_hub_file(run: EvalRun, dataset: dict[str, Any], split: str, into: Path) -> Path:
    from datasets.services import consumers
    from datasets.services.versions import BUCKET
    from evaluation.harness.importers import DataError
    from portal.storage import store

    version = consumers.resolve_input(run.created_by, str(dataset["hub"]), "dataset.hub")
    state, detail = consumers.input_state(version)
    if state != consumers.READY:
        raise DataError(f"{version} is not ready ({state}). {detail}".strip(), field="dataset.hub")
    wanted = dataset.get("file")
    if not wanted:
        splits = consumers.split_files(version)
        every = [p for paths in splits.values() for p in paths]
        candidates = every if len(every) == 1 else splits.get(split, [])
        if len(candidates) != 1:
            raise DataError(
                f"{version} has {len(candidates)} files of split '{split}'; name one with 'file'",
                field="dataset.file",
            )
        wanted = candidates[0]
    record = version.files.filter(path=wanted).first()
    if record is None:
        raise DataError(f"{version} has no file '{str(wanted)[:200]}'", field="dataset.file")
    path = into / Path(record.path).name
    store().download(BUCKET, record.object_key, path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle_:
        for chunk in iter(lambda: handle_.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def connect(run: EvalRun) -> Target:
    """Where this attempt sends requests: the endpoint, or the gateway with a fresh key
    of the run's creator allowed only this model (the previous attempt's is revoked).
    The judging models of judge tasks are always reached through the gateway, with the
    same key (allowed them too)."""
    judges = judge_models(run)
    pool = [] if run.endpoint is not None else [run.model_name]
    raw = _gateway_key(run, pool + judges) if pool or judges else None
    base = settings.EVAL_GATEWAY_URL.rstrip("/") + "/v1"
    judge_url, judge_key = (base, raw) if judges else (None, None)
    if run.endpoint is not None:
        secret = endpoints.api_key_of(run.endpoint)
        return Target(run.endpoint.base_url, secret, run.endpoint.model, judge_url, judge_key)
    assert raw is not None
    return Target(base, raw, run.model_name, judge_url, judge_key)


def judge_models(run: EvalRun) -> list[str]:
    """The models that judge the answers of the run's judge tasks."""
    found = []
    for task, _ in run_tasks(run):
        model = ((task.spec or {}).get("judge") or {}).get("model")
        if task.output_type == "judge" and model and model not in found:
            found.append(str(model))
    return found


def _gateway_key(run: EvalRun, models: list[str]) -> str:
    """A fresh gateway key of the run's creator allowed only ``models``; its secret is
    kept encrypted on the run until the run ends."""
    from portal.services.keys import create_api_key

    if run.created_by is None:
        raise PermissionDenied("The run's creator is gone.", code="creator_gone")
    _revoke_key(run)
    key, raw = create_api_key(
        run.created_by,
        name=f"evaluation {run.pk}",
        expires_at=timezone.now() + timedelta(seconds=settings.EVAL_KEY_TTL_S),
        scopes=["inference"],
        allowed_models=models,
        rpm_limit=0,
        tpm_limit=0,
    )
    EvalRun.objects.filter(pk=run.pk).update(api_key=key, api_key_encrypted=crypto.encrypt(raw))
    run.api_key = key
    return raw


def wait_until_routed(target: Target, progress: Progress) -> bool:
    """Wait (beating) until the gateway lists the model — a fine-tune's adapter is
    served a little after its job succeeds — for up to ``ROUTE_WAIT_S``. False when it
    never appeared: the run goes on and fails with the gateway's own clear 404."""
    import httpx

    deadline = time.monotonic() + ROUTE_WAIT_S
    headers = {"Authorization": f"Bearer {target.api_key}"}
    while True:
        try:
            answer = httpx.get(target.base_url + "/models", headers=headers, timeout=10)
            listed = {m.get("id") for m in answer.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError):
            listed = set()
        if target.model in listed:
            return True
        if time.monotonic() > deadline:
            return False
        progress.beat()
        time.sleep(1.0)


class Progress:
    """Samples done over the run's total, written with the job's heartbeat."""

    def __init__(self, run: EvalRun, ctx: JobContext, total: int) -> None:
        self.run, self.ctx, self.total, self.done = run, ctx, total, 0

    def add(self, count: int) -> None:
        self.done += count
        if count:
            EvalRun.objects.filter(pk=self.run.pk).update(done_samples=self.done)
        self.beat()

    def beat(self) -> None:
        self.ctx.progress(self.done / self.total if self.total else 1.0)


def execute(run: EvalRun, plan: Plan, target: Target, progress: Progress) -> None:
    """Send ``plan.pending`` on an event loop in a thread while this thread stores each
    chunk of finished samples and beats; a cancel or a lost job stops the loop."""
    chunks: queue.Queue[list[Any]] = queue.Queue()
    stop = threading.Event()
    failure: list[BaseException] = []
    worker = threading.Thread(
        target=_loop_thread,
        args=(plan, target, run.params or {}, chunks, stop, failure),
        name=f"eval-{run.pk}",
        daemon=True,
    )
    worker.start()
    try:
        while worker.is_alive() or not chunks.empty():
            try:
                chunk = chunks.get(timeout=0.5)
            except queue.Empty:
                progress.beat()
                continue
            progress.add(store_samples(run, plan.task, chunk))
    except JobCancelled:
        stop.set()
        worker.join(STOP_GRACE_S)
        while not chunks.empty():  # what finished before the stop is kept
            store_samples(run, plan.task, chunks.get())
        raise
    except JobLost:
        stop.set()
        raise
    if failure:
        raise failure[0]


def _loop_thread(
    plan: Plan,
    target: Target,
    params: dict[str, Any],
    chunks: queue.Queue[list[Any]],
    stop: threading.Event,
    failure: list[BaseException],
) -> None:
    try:
        asyncio.run(_run_plan(plan, target, params, chunks.put, stop.is_set))
    except BaseException as exc:  # handed to the handler's thread, which raises it
        failure.append(exc)


async def _run_plan(
    plan: Plan,
    target: Target,
    params: dict[str, Any],
    on_samples: Callable[[list[Any]], None],
    should_stop: Callable[[], bool],
) -> None:
    from evaluation.harness.client import OpenAIClient
    from evaluation.harness.execute import run_task

    concurrency = int(params.get("concurrency") or 8)
    batch_size = int(params.get("batch_size") or 16)
    client = OpenAIClient(
        target.base_url,
        target.api_key,
        target.model,
        concurrency=concurrency,
        batch_size=batch_size,
        timeout_s=CLIENT_TIMEOUT_S,
    )
    judge = None
    spec_judge = getattr(plan.spec, "judge", None)
    if spec_judge is not None and target.judge_url and target.judge_key:
        judge = OpenAIClient(
            target.judge_url,
            target.judge_key,
            spec_judge.model,
            concurrency=concurrency,
            batch_size=batch_size,
            timeout_s=CLIENT_TIMEOUT_S,
        )
    try:
        await run_task(
            plan.spec,
            plan.pending,
            client,
            on_samples=on_samples,
            should_stop=should_stop,
            judge=judge,
        )
    finally:
        for opened in (client, judge):
            if opened is not None:
                await opened.aclose()


def store_samples(run: EvalRun, task: EvalTask, results: list[Any]) -> int:
    """Store finished samples (a repeated one is ignored); the number handed in."""
    rows = [
        EvalSample(
            run=run,
            task=task,
            doc_index=r.doc_index,
            prompt=str(r.prompt),
            target=plain(r.target),
            output=plain(r.output),
            extracted=str(r.extracted or ""),
            metrics={k: v for k, v in plain(r.metrics or {}).items() if v is not None},
            error=str(r.error or "")[:4000],
        )
        for r in results
    ]
    EvalSample.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def plain(value: Any) -> Any:
    """``value`` as JSON: dataclasses as dicts, tuples as lists, NaN and ±inf as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- scores and the record ------------------------------------------------------------


def stored_results(run: EvalRun, task: EvalTask) -> list[Any]:
    """The task's stored samples as SampleResults, in document order."""
    from evaluation.harness.requests import SampleResult

    rows = EvalSample.objects.filter(run=run, task=task).order_by("doc_index")
    return [
        SampleResult(
            doc_index=row.doc_index,
            prompt=row.prompt,
            target=row.target,
            output=row.output,
            extracted=row.extracted,
            metrics=dict(row.metrics),
            error=row.error,
        )
        for row in rows
    ]


def compute_scores(
    run: EvalRun, members: list[tuple[EvalTask, float]], plans: list[Plan]
) -> dict[str, Any]:
    """Every task's metrics (value, bootstrap stderr, n; ``n_errors``; ``primary``) from
    its stored samples, and the suite's aggregate."""
    from evaluation.harness.aggregate import aggregate_task

    tasks: dict[str, Any] = {}
    for plan in plans:
        results = stored_results(run, plan.task)
        seed = int((run.params or {}).get("seed") or DEFAULT_PARAMS["seed"])
        metrics = dict(plain(aggregate_task(plan.spec, results, seed=seed)))
        metrics.setdefault("n_errors", sum(1 for r in results if r.error))
        metrics.setdefault("primary", primary_metric(plan.spec, metrics))
        tasks[plan.key] = metrics
    return {"tasks": tasks, "suite": suite_score(run.suite, members, tasks)}


def primary_metric(spec: Any, metrics: dict[str, Any]) -> str:
    """The task's first declared metric that was computed (``acc`` for multiple choice)."""
    metric_specs = spec.to_json().get("metrics") or []
    declared = [str(m.get("name")) for m in metric_specs if isinstance(m, dict)]
    for name in [*declared, "acc"]:
        if isinstance(metrics.get(name), dict):
            return str(name)
    return next((k for k, v in metrics.items() if isinstance(v, dict)), "")


def suite_score(
    suite: EvalSuite | None, members: list[tuple[EvalTask, float]], tasks: dict[str, Any]
) -> dict[str, Any] | None:
    """The suite's aggregate as :func:`evaluation.harness.aggregate.aggregate_suite`
    computes it from the suite's YAML, with weights keyed ``namespace/name``."""
    if suite is None:
        return None
    from evaluation.harness.aggregate import aggregate_suite
    from evaluation.harness.spec import parse_suite

    spec = parse_suite(suite.source)
    refs = [entry.task for entry in spec.tasks]
    keys = [f"{task.namespace}/{task.name}" for task, _ in members]
    per_task = {ref: tasks[key] for ref, key in zip(refs, keys, strict=True)}
    result = dict(plain(aggregate_suite(spec, per_task)))
    weights = result.get("weights") or {}
    result["weights"] = {key: weights.get(ref) for ref, key in zip(refs, keys, strict=True)}
    return result


def platform_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openmaas")
    except PackageNotFoundError:
        return str(settings.SPECTACULAR_SETTINGS.get("VERSION", "0"))


def build_record(run: EvalRun, plans: list[Plan]) -> dict[str, Any]:
    """What reproduces the run: platform version, model (name, version, revision) or
    endpoint, each task's spec and data hashes, template, few-shot seed and count,
    documents, and the decoding parameters."""
    if run.endpoint is not None:
        model: dict[str, Any] = {"endpoint": run.endpoint.base_url, "model": run.endpoint.model}
    else:
        version = run.model_version
        model = {
            "name": run.model_name,
            "version": str(version) if version else None,
            "revision": version.revision if version else None,
        }
    params = run.params or {}
    tasks = {}
    for plan in plans:
        spec = plan.spec.to_json()
        tasks[plan.key] = {
            "spec_sha256": plan.task.spec_sha256,
            "data_sha256": plan.data_sha256,
            "template": spec.get("doc_to_text"),
            "num_fewshot": spec.get("num_fewshot", 0),
            "fewshot_seed": spec.get("fewshot_seed"),
            "n_docs": plan.n_docs,
            "output_type": plan.task.output_type,
            "generation": spec.get("generation"),
        }
    decoding = {k: params.get(k) for k in ("temperature", "max_tokens", "batch_size")}
    return {
        "platform_version": platform_version(),
        "model": model,
        "tasks": tasks,
        "decoding": decoding,
        "seed": params.get("seed"),
    }
