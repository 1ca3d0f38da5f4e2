"""Fine-tuning jobs: admission (model, files, settings, limits), listing, cancelling,
and their OpenAI-shaped objects. Other code (views, pages, tasks) calls these.

An admitted job whose files are valid goes ``validating_files → queued`` at once and is
submitted to the compute pool as a ``training`` workload; one whose dataset is still
being validated waits in ``validating_files`` until :func:`advance` (the beat task, or
the dataset's settle hook) queues or fails it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet

from datasets.services import consumers
from datasets.services.lineage import record_use, release_use
from portal.errors import NotFound, PlatformError
from portal.limits import QuotaExceeded, RateLimited
from portal.models import ModelRepo, ModelVersion, Visibility
from training.models import (
    FineTuneStatus,
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
    Method,
    Task,
)
from training.services import budget, hyper

logger = logging.getLogger(__name__)

USE_KIND = "fine_tune"  # datasets.models.UseKind.FINE_TUNE
LAYOUTS: dict[str, tuple[str, ...]] = {
    Method.SUPERVISED: ("chat", "prompt_completion"),
    Method.DPO: ("preference",),
    Task.EXPORT: ("chat",),  # an export's held-out rows (the runner scores chats only)
}
QUANTIZE_CHOICES = ("int8",)
MAX_PAGE = 100
DEFAULT_PAGE = 20

SucceededHook = Callable[[FineTuningJob], object]
AutoEvalCheck = Callable[[Any, str], str]
_succeeded_hooks: list[SucceededHook] = []
_auto_eval_checks: list[AutoEvalCheck] = []


def on_succeeded(hook: SucceededHook) -> None:
    """Register ``hook(job)``, called after a job succeeds and that commits (evaluation
    starts a fine-tune's ``auto_eval`` run). Hooks must not raise; one that does is
    logged and the others still run."""
    if hook not in _succeeded_hooks:
        _succeeded_hooks.append(hook)


def on_auto_eval_check(check: AutoEvalCheck) -> None:
    """Register ``check(user, ref) -> ref``: it validates the suite an ``auto_eval``
    names (raising PlatformError) and returns the reference to store."""
    if check not in _auto_eval_checks:
        _auto_eval_checks.append(check)


def _check_auto_eval(user: Any, ref: Any) -> str:
    if ref in (None, ""):
        return ""
    if not isinstance(ref, str) or len(ref) > 200:
        raise PlatformError("'auto_eval' must be a suite name 'namespace/name'.", param="auto_eval")
    if not _auto_eval_checks:
        raise PlatformError("Evaluation is not available here.", param="auto_eval")
    for check in _auto_eval_checks:
        ref = check(user, ref)
    return str(ref)


def _notify_succeeded(job: FineTuningJob) -> None:
    for hook in list(_succeeded_hooks):
        try:
            hook(job)
        except Exception:
            logger.exception("a fine-tune succeeded-hook failed for %s", job.pk)


# --- admission ------------------------------------------------------------------------


def create_job(
    user: Any,
    *,
    model: str,
    training_file: str,
    validation_file: str | None = None,
    suffix: str = "",
    seed: int | None = None,
    metadata: dict[str, Any] | None = None,
    method: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    adapter: dict[str, Any] | None = None,
    gpus: int = 0,
    gpu_model: str = "",
    priority: int = 0,
    grant: Any = None,
    auto_eval: str | None = None,
) -> FineTuningJob:
    """Check and admit a fine-tune of ``model`` on ``training_file`` for ``user``.

    Raises PlatformError: 400 for a bad setting (``param`` names it), an invalid or
    never-completed dataset, a layout that does not suit the method, or an adapter as
    base; 404 for a model or file the user may not read; 429 over the active-job or GPU
    limit or the token budget (``grant`` names the organisation it bills to). Nothing is
    submitted to the pool unless the job is created. ``auto_eval`` names a suite to
    evaluate the result on once the job succeeds (404 for one ``user`` may not read).
    """
    kind, requested = hyper.parse_method(method, hyperparameters)
    lora = hyper.parse_adapter(adapter)
    gpus, gpu_model, priority = hyper.check_resources(gpus, gpu_model, priority)
    clean_suffix = hyper.check_suffix(suffix)
    clean_metadata = hyper.check_metadata(metadata)
    clean_seed = hyper.check_seed(seed)
    _check_gpu_limit(gpus)
    suite = _check_auto_eval(user, auto_eval)
    base = resolve_model(user, _text(model, "model"))
    train = consumers.resolve_input(user, _text(training_file, "training_file"), "training_file")
    valid = None
    if validation_file:
        valid = consumers.resolve_input(
            user, _text(validation_file, "validation_file"), "validation_file"
        )
    inputs = Inputs(kind, train, valid)
    ready = inputs.check()
    job = FineTuningJob(
        base_version=base,
        model_name=model,
        training_version=train,
        validation_version=valid,
        training_file=training_file,
        validation_file=validation_file or "",
        suffix=clean_suffix,
        seed=secrets.randbelow(2**31) if clean_seed is None else clean_seed,
        metadata=clean_metadata,
        method=kind,
        requested_hyperparameters=requested,
        adapter=lora,
        gpus=gpus,
        gpu_model=gpu_model,
        priority=priority,
        created_by=user,
        billing_org_id=getattr(grant, "org_id", None),
        auto_eval=suite,
    )
    job.set_owner(user)
    job.visibility = Visibility.PRIVATE
    estimate = _token_estimate(job, train, requested)
    _save_admitted(job, user, estimate)
    if ready:
        _queue(job)
    return job


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise PlatformError(f"'{param}' must be a non-empty string.", param=param)
    return value.strip()


def _check_gpu_limit(gpus: int) -> None:
    if gpus > settings.FINE_TUNING_MAX_GPUS:
        raise QuotaExceeded(
            f"A fine-tuning job may use at most {settings.FINE_TUNING_MAX_GPUS} GPUs.",
            code="quota_exceeded",
            param="gpus",
        )


def resolve_model(user: Any, name: str) -> ModelVersion:
    """The base model version ``owner/name`` (latest) or ``owner/name@N`` names, readable
    by ``user``; 404 otherwise. An adapter version is refused (400) for now."""
    full, _, number = name.partition("@")
    namespace, _, repo_name = full.partition("/")
    repo = ModelRepo.objects.restrict(user, "read").filter(namespace=namespace, name=repo_name)
    found = repo.first()
    version = None
    if found is not None:
        versions = found.versions.select_related("repo")
        if not number:
            version = versions.order_by("-number").first()
        elif number.removeprefix("v").isdigit():
            version = versions.filter(number=int(number.removeprefix("v"))).first()
    if version is None:
        raise NotFound(
            f"The model '{name[:200]}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if version.base_version_id is not None:
        raise PlatformError(
            f"'{name[:200]}' is a LoRA adapter; fine-tuning an adapter is not supported yet. "
            "Fine-tune its base model instead.",
            code="invalid_model",
            param="model",
        )
    return version


@dataclass
class Inputs:
    """A job's training and validation dataset versions, checked for its method."""

    method: str
    train: Any
    valid: Any | None

    def pairs(self) -> list[tuple[Any, str]]:
        pairs = [(self.train, "training_file")] if self.train is not None else []
        if self.valid is not None:
            pairs.append((self.valid, "validation_file"))
        return pairs

    def check(self) -> bool:
        """True when every version is ready and fits the method; False while one is still
        being validated. Raises a 400 for an invalid or never-completed one, a wrong
        layout, or a version without a single JSONL file to train on."""
        waiting = False
        for version, param in self.pairs():
            state, detail = consumers.input_state(version)
            if state == consumers.VALIDATING:
                waiting = True
                continue
            if state != consumers.READY:
                raise PlatformError(
                    f"{param} is not usable: {detail}", code=f"invalid_{param}", param=param
                )
            _check_layout(version, self.method, param)
            data_path(version, "validation" if param == "validation_file" else "train", param)
        return not waiting


def _check_layout(version: Any, method: str, param: str) -> None:
    allowed = LAYOUTS[method]
    if version.format not in allowed:
        raise PlatformError(
            f"{param} holds '{version.format or 'unknown'}' rows; a {method} fine-tune needs "
            f"{' or '.join(allowed)} rows.",
            code=f"invalid_{param}",
            param=param,
        )


def data_path(version: Any, split: str, param: str) -> str:
    """The one JSONL file of ``version`` to read as ``split``: its only file, else its
    only file of that split. Raises a 400 when there is none or several."""
    splits = consumers.split_files(version)
    every = [path for paths in splits.values() for path in paths]
    candidates = every if len(every) == 1 else splits.get(split, [])
    if len(candidates) != 1 or not candidates[0].endswith(".jsonl"):
        raise PlatformError(
            f"{param}: {version} must hold one JSONL file (or one of split '{split}').",
            code=f"invalid_{param}",
            param=param,
        )
    return candidates[0]


def _token_estimate(job: FineTuningJob, train: Any, requested: dict[str, Any]) -> int:
    rows = int(train.rows or 0) or max(1, int(train.total_bytes or 0) // 200)
    epochs = requested.get("n_epochs", hyper.AUTO)
    if epochs == hyper.AUTO:
        epochs = hyper.auto_epochs(rows)
    return consumers.estimated_tokens(train) * int(epochs)


def _save_admitted(job: FineTuningJob, user: Any, estimate: int) -> None:
    """Count active jobs and save under a lock on the user's row, so two concurrent
    creates cannot both pass the limit; the token reservation is undone if saving fails."""
    reservation = None
    try:
        with transaction.atomic():
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            active = FineTuningJob.objects.filter(
                owner_user=user, status__in=FineTuningJob.active_statuses
            ).count()
            if active >= settings.FINE_TUNING_MAX_ACTIVE_JOBS:
                raise RateLimited(
                    f"You have {active} active fine-tuning jobs, the most allowed "
                    f"({settings.FINE_TUNING_MAX_ACTIVE_JOBS}); wait for one to finish.",
                    code="rate_limit_exceeded",
                    error_type="invalid_request_error",
                )
            reservation = budget.reserve(user, job.billing_org_id, estimate)
            job.result = {"budget": reservation}
            job.save(force_insert=True)
            job.log(f"Created fine-tuning job: {job.id}")
    except BaseException:
        if reservation is not None:
            budget.settle(reservation, 0)
        raise


def _queue(job: FineTuningJob) -> bool:
    """Resolve the hyperparameters, record the dataset uses, ``validating_files →
    queued`` and submit the workload. False when another process moved the job first."""
    from compute.services import workloads

    rows = int(job.training_version.rows or 1) if job.training_version else 1
    export = job.task == Task.EXPORT
    with transaction.atomic():
        for version in (job.training_version, job.validation_version):
            if version is not None:
                record_use(version, USE_KIND, job.id, f"fine-tune {job.id}")
        if job.validation_version is not None or not export:
            job.log("Validated the training files")
        resolved = (
            {}
            if export
            else hyper.resolve(job.method, job.requested_hyperparameters, job.adapter, rows)
        )
        moved = job.transition(
            FineTuneStatus.QUEUED,
            "Export job queued" if export else "Fine-tuning job queued",
            hyperparameters=resolved,
        )
        if not moved:
            return False
        workloads.submit(
            "training",
            job.id,
            model_version=job.base_version,
            gpus=job.gpus,
            gpu_model=job.gpu_model,
            priority=job.priority,
        )
    return True


def _layout_key(job: FineTuningJob) -> str:
    return Task.EXPORT if job.task == Task.EXPORT else job.method


def advance(job: FineTuningJob) -> None:
    """Settle a job waiting in ``validating_files``: queue it once its files are valid,
    fail it when one turns out invalid; leave it while they are still validated."""
    if job.status != FineTuneStatus.VALIDATING_FILES:
        return
    try:
        ready = Inputs(_layout_key(job), job.training_version, job.validation_version).check()
    except PlatformError as exc:
        finish(job, FineTuneStatus.FAILED, exc.message, code=exc.code, param=exc.param or "")
        return
    if ready:
        _queue(job)


def advance_waiting(version_id: int | None = None) -> int:
    """:func:`advance` every job in ``validating_files`` (those reading ``version_id``
    when given); the number looked at."""
    jobs = FineTuningJob.objects.filter(status=FineTuneStatus.VALIDATING_FILES)
    if version_id is not None:
        jobs = jobs.filter(Q(training_version_id=version_id) | Q(validation_version_id=version_id))
    count = 0
    for job in jobs.select_related("training_version", "validation_version"):
        advance(job)
        count += 1
    return count


# --- exports ------------------------------------------------------------------------


def create_export(
    user: Any, job_id: str, *, quantize: str | None = "int8", heldout_file: str | None = None
) -> FineTuningJob:
    """Admit an export of the succeeded LoRA fine-tune ``job_id``: a job (``task`` export,
    same owner and base) whose runner merges the adapter into the base, quantises it
    (``quantize`` "int8" or None for the merged weights alone) and reports the held-out
    loss before and after on ``heldout_file`` (a chat dataset or file, optional). Its
    result is a new version of the fine-tune's hub repo (:mod:`training.services.results`).

    Raises NotFound for a job the user may not change; a 400 for a source that is not a
    succeeded LoRA fine-tune, a bad ``quantize`` or held-out file; 429 over the
    active-job limit. Queued at once unless the held-out file is still being validated.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise PlatformError(
            f"'quantize' must be one of {', '.join(QUANTIZE_CHOICES)} or null.", param="quantize"
        )
    source = get_job(user, job_id, "write")
    _check_export_source(source)
    heldout = None
    if heldout_file:
        heldout = consumers.resolve_input(user, _text(heldout_file, "heldout_file"), "heldout_file")
    ready = Inputs(Task.EXPORT, None, heldout).check()
    version = source.result_version
    assert version is not None  # _check_export_source
    job = FineTuningJob(
        task=Task.EXPORT,
        source_job=source,
        export={"quantize": quantize},
        base_version=source.base_version,
        model_name=(source.fine_tuned_model or str(version))[:200],
        validation_version=heldout,
        validation_file=heldout_file or "",
        suffix=source.suffix,
        seed=source.seed,
        method=source.method,
        adapter=source.adapter,
        priority=source.priority,
        created_by=user,
        billing_org_id=source.billing_org_id,
    )
    job.set_owner(source.owner_user or source.owner_org)
    job.visibility = Visibility.PRIVATE
    _save_admitted(job, user, 0)
    if ready:
        _queue(job)
    return job


def _check_export_source(source: FineTuningJob) -> None:
    problem = ""
    if source.task != Task.FINE_TUNE:
        problem = "it is itself an export"
    elif source.status != FineTuneStatus.SUCCEEDED or source.result_version_id is None:
        problem = f"it has not succeeded (status {source.status})"
    elif source.adapter.get("type") == "full":
        problem = "it trained full weights; only a LoRA adapter is merged and exported"
    if problem:
        raise PlatformError(
            f"Job {source.id} cannot be exported: {problem}.",
            code="invalid_job_state",
            param="fine_tuning_job_id",
        )


def exports_of(job: FineTuningJob) -> QuerySet[FineTuningJob]:
    """The export jobs made from ``job``, newest first."""
    return job.exports.select_related("result_version__repo").order_by("-created_at", "-id")


# --- ending ---------------------------------------------------------------------------


def finish(
    job: FineTuningJob,
    status: str,
    message: str,
    *,
    code: str = "",
    param: str = "",
    fields: dict[str, Any] | None = None,
) -> bool:
    """Move ``job`` to a final ``status`` (an event says ``message``; ``fields`` are set
    with it), release its datasets and settle its token reservation. False when it had
    already moved."""
    fields = dict(fields or {})
    if status == FineTuneStatus.FAILED:
        fields.update(error=message[:2000], error_code=code or "job_failed")
        fields["error_param"] = param[:64]
    if not job.transition(status, message, **fields):
        return False
    release(job)
    if status == FineTuneStatus.SUCCEEDED and _succeeded_hooks:
        transaction.on_commit(lambda: _notify_succeeded(job), robust=True)
    return True


def release(job: FineTuningJob) -> None:
    """Let the job's datasets go and charge its budget what it really trained."""
    for version in (job.training_version, job.validation_version):
        if version is not None:
            release_use(version, USE_KIND, job.id)
    reservation = (job.result or {}).get("budget")
    if reservation:
        used = int(job.trained_tokens or (job.result or {}).get("trained_tokens_so_far", 0))
        budget.settle(reservation, used)
        result = {k: v for k, v in job.result.items() if k != "budget"}
        FineTuningJob.objects.filter(pk=job.pk).update(result=result)
        job.result = result


def cancel_job(user: Any, job_id: str) -> FineTuningJob:
    """Cancel ``job_id`` (the owner's); its workload, if any, is stopped. Raises NotFound
    for another's job, a 400 for one that has already ended."""
    job = get_job(user, job_id, "write")
    for _attempt in range(3):
        if job.is_terminal:
            raise PlatformError(
                f"Job {job.id} has already {job.status}; it cannot be cancelled.",
                code="invalid_job_state",
            )
        FineTuningJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        if finish(job, FineTuneStatus.CANCELLED, "Fine-tuning job cancelled"):
            _stop_workload(job, "cancelled by the user")
            return job
        job.refresh_from_db()
    raise PlatformError("The job is changing state; try again.", code="conflict", status=409)


def _stop_workload(job: FineTuningJob, reason: str) -> None:
    from compute.services import workloads

    workload = workloads.for_ref("training", job.id)
    if workload is not None:
        workloads.stop(workload, reason)


# --- reading --------------------------------------------------------------------------


def jobs_of(user: Any) -> QuerySet[FineTuningJob]:
    """The jobs ``user`` may read."""
    return FineTuningJob.objects.restrict(user, "read")


def get_job(user: Any, job_id: str, action: str = "read") -> FineTuningJob:
    """The job ``job_id`` if ``user`` may ``action`` it; NotFound (404) otherwise."""
    job = (
        FineTuningJob.objects.restrict(user, action)  # type: ignore[arg-type]
        .select_related("base_version__repo", "training_version", "validation_version")
        .filter(pk=str(job_id)[:40])
        .first()
    )
    if job is None:
        raise NotFound(f"No such fine-tuning job: {str(job_id)[:64]}", param="fine_tuning_job_id")
    return job


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool


def list_jobs(
    user: Any, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
) -> Page:
    """The user's own jobs, newest first, after the job ``after``; ``metadata`` filters
    by pairs (an empty dict: jobs without metadata)."""
    jobs = jobs_of(user).filter(owner_user=user)
    if metadata is not None:
        jobs = jobs.filter(metadata__contains=metadata) if metadata else jobs.filter(metadata={})
    if after:
        anchor = jobs_of(user).filter(owner_user=user, pk=after).first()
        if anchor is None:
            raise PlatformError(f"No fine-tuning job '{after[:64]}' to list after.", param="after")
        jobs = jobs.filter(
            Q(created_at__lt=anchor.created_at) | Q(created_at=anchor.created_at, id__lt=anchor.pk)
        )
    page = list(
        jobs.select_related("base_version__repo").order_by("-created_at", "-id")[: limit + 1]
    )
    return Page(page[:limit], len(page) > limit)


def list_events(job: FineTuningJob, *, after: str | None, limit: int) -> Page:
    """The job's events, newest first, after the event ``after`` (``ftevent-<n>``)."""
    events = job.events.order_by("-pk")
    if after:
        number = after.removeprefix("ftevent-")
        if not number.isdigit():
            raise PlatformError(f"No event '{after[:64]}' to list after.", param="after")
        events = events.filter(pk__lt=int(number))
    page = list(events[: limit + 1])
    return Page(page[:limit], len(page) > limit)


def list_checkpoints(job: FineTuningJob, *, after: str | None, limit: int) -> Page:
    """The job's complete checkpoints, newest (highest step) first, after ``after``."""
    checkpoints = job.checkpoints.filter(complete=True).order_by("-step")
    if after:
        anchor = job.checkpoints.filter(pk=after).first()
        if anchor is None:
            raise PlatformError(f"No checkpoint '{after[:64]}' to list after.", param="after")
        checkpoints = checkpoints.filter(step__lt=anchor.step)
    page = list(checkpoints[: limit + 1])
    return Page(page[:limit], len(page) > limit)


# --- OpenAI's objects -----------------------------------------------------------------


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def shown_hyperparameters(job: FineTuningJob) -> dict[str, Any]:
    """The method's hyperparameters as OpenAI shows them: resolved once queued, the
    client's values (``auto`` kept) before."""
    keys = hyper.DPO_KEYS if job.method == Method.DPO else hyper.SUPERVISED_KEYS
    source = job.hyperparameters or job.requested_hyperparameters
    return {name: source.get(name, hyper.AUTO) for name in keys}


def job_object(job: FineTuningJob) -> dict[str, Any]:
    """OpenAI's ``fine_tuning.job`` object, with the platform's extensions (``adapter``,
    ``gpus``, ``gpu_model``, ``priority``, ``task``; an export adds ``source_job`` and
    ``export``: the quantisation asked for and, once it succeeded, the runner's report).
    An export's ``fine_tuned_model`` is the hub version it registered (``owner/name@vN``),
    loadable and deployable like any model."""
    shown = shown_hyperparameters(job)
    error = None
    if job.status == FineTuneStatus.FAILED:
        error = {
            "code": job.error_code or "job_failed",
            "message": job.error or "The job failed.",
            "param": job.error_param or None,
        }
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": _ts(job.created_at),
        "error": error,
        "fine_tuned_model": job.fine_tuned_model or None,
        "finished_at": _ts(job.finished_at),
        "hyperparameters": {k: v for k, v in shown.items() if k != "beta"},
        "model": job.model_name,
        "organization_id": job.namespace,
        "result_files": list(job.result_files or []),
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file or None,
        "estimated_finish": _ts(job.estimated_finish),
        "integrations": [],
        "metadata": job.metadata or None,
        "method": {"type": job.method, job.method: {"hyperparameters": shown}},
        "adapter": job.adapter,
        "gpus": job.gpus,
        "gpu_model": job.gpu_model,
        "priority": job.priority,
        "task": job.task,
        "source_job": job.source_job_id,
        "export": job.export or None,
    }


LEVELS = {"warning": "warn", "warn": "warn", "error": "error"}


def event_object(event: FineTuningEvent) -> dict[str, Any]:
    """OpenAI's ``fine_tuning.job.event``: ``type`` message or metrics (``data`` then
    holds the step's metrics)."""
    return {
        "id": f"ftevent-{event.pk}",
        "object": "fine_tuning.job.event",
        "created_at": _ts(event.created_at),
        "level": LEVELS.get(event.level, "info"),
        "message": event.message,
        "data": event.data or None,
        "type": event.type if event.type in ("message", "metrics") else "message",
    }


CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def checkpoint_object(checkpoint: FineTuningCheckpoint) -> dict[str, Any]:
    """OpenAI's ``fine_tuning.job.checkpoint``."""
    job = checkpoint.job
    name = job.fine_tuned_model or fine_tuned_name(job)
    metrics = {key: checkpoint.metrics.get(key) for key in CHECKPOINT_METRICS}
    metrics["step"] = checkpoint.step
    return {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": _ts(checkpoint.created_at),
        "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{checkpoint.step}",
        "fine_tuning_job_id": job.id,
        "metrics": metrics,
        "step_number": checkpoint.step,
    }


def fine_tuned_name(job: FineTuningJob) -> str:
    """``ft:{base repo}:{owner namespace}:{suffix}:{job id}``."""
    return f"ft:{job.base_version.repo.full_name}:{job.namespace}:{job.suffix}:{job.id}"
