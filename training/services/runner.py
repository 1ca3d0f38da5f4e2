"""What a node's runner reports (``/api/training/runner/…``): events and progress,
checkpoints and the result, each authenticated by the run's bearer token.

A token names one attempt of one workload (:func:`compute.services.workloads.authenticate`);
a superseded attempt's token is a 401, so a runner presumed dead cannot write into the
job a later attempt now runs. Bodies are bounded (events per batch, metrics per event,
files per upload, bytes per file) and metric values must be finite numbers or null.

Uploaded files go to platform-built keys (:func:`portal.storage.training_key`) by
presigned PUT. ``complete`` checks that each object exists with its declared size; the
declared sha256 is recorded, not recomputed here (that would read every byte back
through the portal): the agent verifies it when a resumed run downloads a checkpoint
and when a replica fetches the registered adapter, so a wrong hash fails there loudly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.errors import AuthenticationFailed, NotFound, PlatformError
from portal.storage import safe_relative_path, store, training_key
from training.models import FineTuneStatus, FineTuningCheckpoint, FineTuningEvent, FineTuningJob
from training.services import runs

MAX_EVENTS = 500
MAX_METRICS = 32
MAX_FILES = 20
MAX_HISTORY = 200_000
MAX_STEP = 10**9
MAX_DETAIL_BYTES = 2000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KNOWN_FILES = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "trainer_state.pt",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "chat_template.jinja",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "README.md",
    }
)
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(json|safetensors|pt|txt|jinja|model)$")


class BadReport(PlatformError):
    code = "invalid_report"


@dataclass(frozen=True)
class Run:
    """An authenticated runner: its workload (current attempt) and job."""

    workload: Any
    job: FineTuningJob


def authenticate(raw_token: str | None) -> Run:
    """The run a bearer token belongs to; AuthenticationFailed (401) for a missing, bad
    or superseded token, or one of another kind of workload."""
    from compute.services import workloads

    workload = workloads.authenticate(raw_token or "") if raw_token else None
    if workload is None or workload.kind != "training":
        raise AuthenticationFailed("Invalid or superseded run token.", code="invalid_run_token")
    job = (
        FineTuningJob.objects.select_related(
            "base_version__repo", "training_version", "validation_version"
        )
        .filter(pk=workload.ref)
        .first()
    )
    if job is None:
        raise AuthenticationFailed("Invalid or superseded run token.", code="invalid_run_token")
    return Run(workload, job)


# --- checks ---------------------------------------------------------------------------


def _object(body: Any, param: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadReport(f"'{param}' must be an object.", param=param)
    return body


def check_metrics(data: Any, param: str = "metrics") -> dict[str, float | int | None]:
    """At most 32 named values, each a finite number or null."""
    data = _object(data, param)
    if len(data) > MAX_METRICS:
        raise BadReport(f"At most {MAX_METRICS} metrics.", param=param)
    clean: dict[str, float | int | None] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise BadReport(f"Bad metric name {str(name)[:40]!r}.", param=param)
        clean[name] = _finite(value, f"{param}.{name}")
    return clean


def _finite(value: Any, param: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadReport(f"'{param}' must be a finite number or null.", param=param)
    return value


def check_files(files: Any) -> list[dict[str, Any]]:
    """1 to 20 files, each a safe relative path of a known name (or shard/safe pattern),
    a size within ``FINE_TUNING_MAX_FILE_BYTES`` and a sha256."""
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise BadReport(f"'files' must list 1 to {MAX_FILES} files.", param="files")
    clean, seen = [], set()
    for entry in files:
        entry = _object(entry, "files")
        path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not isinstance(path, str) or not safe_relative_path(path) or path in seen:
            raise BadReport(f"Bad or repeated file path {str(path)[:80]!r}.", param="files")
        name = path.rsplit("/", 1)[-1]
        if name not in KNOWN_FILES and not _SHARD.match(name) and not _SAFE_NAME.match(name):
            raise BadReport(f"Unexpected file {path[:80]!r}.", param="files")
        limit = settings.FINE_TUNING_MAX_FILE_BYTES
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
            raise BadReport(f"{path}: size must be 0 to {limit} bytes.", param="files")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise BadReport(f"{path}: sha256 must be 64 lowercase hex digits.", param="files")
        seen.add(path)
        clean.append({"path": path, "size": size, "sha256": sha})
    return clean


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise BadReport("'step' must be a whole number of at least 0.", param="step")
    return step


def _writable(run: Run) -> None:
    """Reports after the job ended (a cancel the runner has not heard yet) are refused
    with 409, which the runner takes as "stop now"."""
    run.job.refresh_from_db(fields=["status", "attempts", "cancel_requested", "result"])
    if run.job.is_terminal:
        raise PlatformError(f"Job {run.job.id} has {run.job.status}.", code="job_ended", status=409)


# --- events ---------------------------------------------------------------------------


def report_events(run: Run, body: Any) -> dict[str, Any]:
    """Store a batch of events (metrics and messages), the progress and the heartbeat;
    answer whether the job should stop."""
    body = _object(body, "body")
    job = run.job
    job.refresh_from_db(fields=["status", "attempts", "cancel_requested", "result"])
    if job.is_terminal:
        return {"cancel": True}
    events = body.get("events", [])
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise BadReport(f"'events' must be a list of at most {MAX_EVENTS}.", param="events")
    progress = _finite(body.get("progress"), "progress")
    rows = [_event_row(job, event) for event in events]
    runs.mark_running(job, run.workload.attempt)
    with transaction.atomic():
        FineTuningEvent.objects.bulk_create(rows)
        _heartbeat(job, progress, rows)
    return {"cancel": bool(job.cancel_requested)}


def _event_row(job: FineTuningJob, event: Any) -> FineTuningEvent:
    event = _object(event, "events")
    kind = event.get("type")
    if kind == "metrics":
        data = check_metrics(event.get("data"), "events.data")
        return FineTuningEvent(
            job=job, type="metrics", level="info", message=_step_message(data), data=data
        )
    if kind == "message":
        level = event.get("level", "info")
        message = event.get("message")
        if level not in ("info", "warn", "warning", "error") or not isinstance(message, str):
            raise BadReport("A message event needs a level and a message.", param="events")
        return FineTuningEvent(job=job, type="message", level=level, message=message[:2000])
    raise BadReport("An event's type is 'metrics' or 'message'.", param="events.type")


def _step_message(data: dict[str, Any]) -> str:
    """OpenAI's wording: ``Step 12/30: training loss=1.2345``."""
    step, total = data.get("step"), data.get("total_steps")
    text = f"Step {step}/{total}" if total is not None else f"Step {step}"
    if data.get("train_loss") is not None:
        text += f": training loss={float(data['train_loss']):.4f}"
    if data.get("valid_loss") is not None:
        text += f", validation loss={float(data['valid_loss']):.4f}"
    return text


def _heartbeat(job: FineTuningJob, progress: Any, rows: list[FineTuningEvent]) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"heartbeat_at": now}
    if progress is not None:
        fields["progress"] = min(1.0, max(0.0, float(progress)))
        started = job.started_at
        if started is not None and fields["progress"] > 0.01:
            elapsed = (now - started).total_seconds()
            left = elapsed * (1 - fields["progress"]) / fields["progress"]
            fields["estimated_finish"] = now + timedelta(seconds=left)
    tokens = [r.data.get("trained_tokens") for r in rows if r.type == "metrics"]
    tokens = [t for t in tokens if isinstance(t, int | float)]
    if tokens:
        result = {**(job.result or {}), "trained_tokens_so_far": int(max(tokens))}
        fields["result"] = result
    FineTuningJob.objects.filter(pk=job.pk, status=job.status).update(**fields)


# --- uploads --------------------------------------------------------------------------


def _uploads(
    job: FineTuningJob, part: str, bucket: str, files: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    objects = store()
    for entry in files:
        entry["object_key"] = training_key(job.id, part, entry["path"])
    return [
        {"path": e["path"], "url": objects.presigned_put(bucket, e["object_key"], runs.URL_TTL_S)}
        for e in files
    ]


def _verify(bucket: str, files: list[dict[str, Any]]) -> None:
    """Every object is there with its declared size; else a 400 naming the first not."""
    objects = store()
    for entry in files:
        try:
            size = objects.size(bucket, entry["object_key"])
        except Exception as exc:  # the S3 client's NoSuchKey, among others
            raise BadReport(f"{entry['path']} was not uploaded.", param="files") from exc
        if size != entry["size"]:
            raise BadReport(
                f"{entry['path']}: {size} bytes arrived, {entry['size']} were announced.",
                param="files",
            )


def start_checkpoint(run: Run, body: Any) -> dict[str, Any]:
    """Record checkpoint ``step`` (re-announcing one replaces its file list) and hand out
    one presigned PUT per file."""
    body = _object(body, "body")
    _writable(run)
    step = _check_step(body.get("step"))
    metrics = check_metrics(body.get("metrics") or {})
    files = check_files(body.get("files"))
    uploads = _uploads(run.job, f"checkpoints/{step}", runs.CHECKPOINTS_BUCKET, files)
    values = {
        "metrics": metrics,
        "files": files,
        "complete": False,
        "attempt": run.workload.attempt,
    }
    try:
        FineTuningCheckpoint.objects.update_or_create(job=run.job, step=step, defaults=values)
    except IntegrityError:  # a concurrent announcement of the same step won; use its row
        FineTuningCheckpoint.objects.filter(job=run.job, step=step).update(**values)
    return {"uploads": uploads}


def complete_checkpoint(run: Run, step: int) -> dict[str, Any]:
    """Mark checkpoint ``step`` complete once every file arrived; its id."""
    _writable(run)
    checkpoint = FineTuningCheckpoint.objects.filter(job=run.job, step=step).first()
    if checkpoint is None:
        raise NotFound(f"No checkpoint at step {step} was announced.", param="step")
    _verify(runs.CHECKPOINTS_BUCKET, checkpoint.files)
    if not checkpoint.complete:
        FineTuningCheckpoint.objects.filter(pk=checkpoint.pk).update(complete=True)
        run.job.log(f"Checkpoint created at step {step}")
        prune_checkpoints(run.job)
    return {"id": checkpoint.id}


def prune_checkpoints(job: FineTuningJob) -> int:
    """Delete all but the newest ``FINE_TUNING_KEEP_CHECKPOINTS`` complete checkpoints
    (rows and objects; OpenAI keeps three too); returns how many went. An incomplete
    checkpoint older than the newest complete one is an abandoned upload and goes too."""
    complete = job.checkpoints.filter(complete=True).order_by("-step")
    kept = list(complete.values_list("step", flat=True)[: settings.FINE_TUNING_KEEP_CHECKPOINTS])
    if not kept:
        return 0
    old = job.checkpoints.filter(step__lt=min(kept)).exclude(step__in=kept)
    objects = store()
    doomed = list(old)
    for checkpoint in doomed:
        for entry in checkpoint.files:
            if entry.get("object_key"):
                objects.delete(runs.CHECKPOINTS_BUCKET, entry["object_key"])
    FineTuningCheckpoint.objects.filter(pk__in=[c.pk for c in doomed]).delete()
    return len(doomed)


def start_result(run: Run, body: Any) -> dict[str, Any]:
    """Record the announced result (files, final metrics, step history) and hand out
    one presigned PUT per file."""
    body = _object(body, "body")
    _writable(run)
    files = check_files(body.get("files"))
    metrics = check_metrics(body.get("metrics") or {})
    history = check_history(body.get("history") or [])
    details = check_details(body.get("export"))
    uploads = _uploads(run.job, "result", runs.RESULT_BUCKET, files)
    pending = {
        "files": files,
        "metrics": metrics,
        "history": history,
        "attempt": run.workload.attempt,
        "export": details,
    }
    result = {**(run.job.result or {}), "pending_result": pending}
    FineTuningJob.objects.filter(pk=run.job.pk).update(result=result)
    run.job.result = result
    return {"uploads": uploads}


def check_details(details: Any) -> dict[str, Any]:
    """An export's non-numeric report (``dtype``, ``quantization``): an object of at most
    ``MAX_DETAIL_BYTES`` as JSON, nested at most one level, of plain values."""
    if details is None:
        return {}
    details = _object(details, "export")
    if len(json.dumps(details)) > MAX_DETAIL_BYTES:
        raise BadReport(f"'export' must be at most {MAX_DETAIL_BYTES} bytes.", param="export")
    for value in details.values():
        inner = value.values() if isinstance(value, dict) else [value]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in inner):
            raise BadReport("'export' holds plain values only.", param="export")
    return details


def check_history(history: Any) -> list[list[float | int | None]]:
    """``[[step, train_loss, train_acc, valid_loss, valid_acc], …]``, finite or null."""
    if not isinstance(history, list) or len(history) > MAX_HISTORY:
        raise BadReport(f"'history' must be a list of at most {MAX_HISTORY} rows.", param="history")
    clean = []
    for row in history:
        if not isinstance(row, list) or len(row) != 5:
            raise BadReport("Each history row has 5 values.", param="history")
        clean.append([_finite(value, "history") for value in row])
    return clean


def complete_result(run: Run) -> dict[str, Any]:
    """Register the fine-tuned model once every result file arrived; the job succeeds.
    Idempotent: a repeat answers the same name."""
    from training.services import results

    run.job.refresh_from_db()
    if run.job.status == FineTuneStatus.SUCCEEDED and run.job.fine_tuned_model:
        return {"fine_tuned_model": run.job.fine_tuned_model}
    _writable(run)
    pending = (run.job.result or {}).get("pending_result")
    if not pending:
        raise NotFound("No result was announced.", param="result")
    _verify(runs.RESULT_BUCKET, pending["files"])
    name = results.succeed(run.job, pending)
    return {"fine_tuned_model": name}
