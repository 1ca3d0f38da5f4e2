"""The ``training`` workload kind: what a node's runner gets (spec and files) and how the
workload's status changes move the fine-tuning job.

Compute calls :meth:`TrainingKind.describe` whenever it builds a heartbeat answer (so the
presigned URLs are fresh and a requeued run resumes from the newest checkpoint) and
:meth:`TrainingKind.on_status` after each workload status change, possibly more than
once for one change and outside its transaction: every branch re-reads the job and
does nothing when the job is already where the change would take it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings

from datasets.services import consumers
from portal.storage import store
from training.models import FineTuneStatus, FineTuningCheckpoint, FineTuningJob, Task
from training.services import jobs

logger = logging.getLogger(__name__)

CHECKPOINTS_BUCKET = "artifacts"
# Result files become model files: the registry and the agent read those from "models".
RESULT_BUCKET = "models"
URL_TTL_S = 6 * 3600
TRAIN_FILE = "data/train.jsonl"
VALID_FILE = "data/valid.jsonl"
RESUME_DIR = "resume"
ADAPTER_DIR = "adapter"  # an export's LoRA, under the runner's files_dir


def total_steps(job: FineTuningJob) -> int:
    """Optimizer steps of the whole run: batches per epoch times epochs."""
    hp = job.hyperparameters
    rows = int(job.training_version.rows or 1) if job.training_version else 1
    return max(1, math.ceil(rows / int(hp.get("batch_size", 1)))) * int(hp.get("n_epochs", 1))


def checkpoint_every(job: FineTuningJob) -> int:
    """``FINE_TUNING_CHECKPOINT_EVERY`` steps, or (0, the default) a quarter of the run
    (rounded up), so even a small job leaves a few checkpoints to resume from."""
    every = int(settings.FINE_TUNING_CHECKPOINT_EVERY)
    return every if every > 0 else max(1, math.ceil(total_steps(job) / 4))


def latest_checkpoint(job: FineTuningJob) -> FineTuningCheckpoint | None:
    return job.checkpoints.filter(complete=True).order_by("-step").first()


def build_spec(job: FineTuningJob, attempt: int) -> dict[str, Any]:
    """The runner spec of the contract (the agent adds the local paths and ``portal``)."""
    if job.task == Task.EXPORT:
        return build_export_spec(job, attempt)
    hp = job.hyperparameters
    every = checkpoint_every(job)
    latest = latest_checkpoint(job)
    gpu = job.gpus > 0
    return {
        "job": job.id,
        "attempt": attempt,
        "task": job.task,
        "method": job.method,
        "train_file": TRAIN_FILE,
        "validation_file": VALID_FILE
        if job.validation_version_id or _own_validation(job)
        else None,
        "hyperparameters": {
            "n_epochs": int(hp["n_epochs"]),
            "batch_size": int(hp["batch_size"]),
            "learning_rate": float(hp["learning_rate"]),
            "beta": float(hp.get("beta", 0.1)),
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "max_seq_len": int(settings.FINE_TUNING_MAX_SEQ_LEN),
            "checkpoint_every": every,
            "eval_every": every,
        },
        "adapter": job.adapter,
        "seed": job.seed,
        "device": "cuda" if gpu else "cpu",
        "dtype": "bfloat16" if gpu else "float32",
        "resume": {"step": latest.step, "dir": RESUME_DIR} if latest else None,
        "export": None,
    }


def build_export_spec(job: FineTuningJob, attempt: int) -> dict[str, Any]:
    """An export's spec: the LoRA under ``adapter/``, the held-out rows (if any) as the
    validation file, the quantisation asked for; it always runs on the CPU."""
    return {
        "job": job.id,
        "attempt": attempt,
        "task": Task.EXPORT.value,
        "method": job.method,
        "train_file": None,
        "validation_file": VALID_FILE if job.validation_version_id else None,
        "hyperparameters": {"max_seq_len": int(settings.FINE_TUNING_MAX_SEQ_LEN)},
        "adapter": job.adapter,
        "seed": job.seed,
        "device": "cpu",
        "dtype": "float32",
        "resume": None,
        "export": {"quantize": (job.export or {}).get("quantize")},
    }


def build_export_files(job: FineTuningJob) -> list[dict[str, Any]]:
    """The source fine-tune's adapter files (its registered version, README left out)
    under ``adapter/`` and the held-out rows as ``data/valid.jsonl``."""
    source = job.source_job
    version = source.result_version if source is not None else None
    if version is None:
        return []
    objects = store()
    files = [
        {
            "path": f"{ADAPTER_DIR}/{record.path}",
            "size": record.size,
            "sha256": record.sha256,
            "url": objects.presigned_get(RESULT_BUCKET, record.object_key, URL_TTL_S),
        }
        for record in version.files.all()
        if record.path != "README.md"
    ]
    if job.validation_version is not None:
        path = jobs.data_path(job.validation_version, "validation", "heldout_file")
        files.append(_renamed(job.validation_version, path, VALID_FILE))
    return files


def _own_validation(job: FineTuningJob) -> str | None:
    """The training version's own validation file, when it has exactly one and no
    separate validation file was given."""
    if job.validation_version_id or job.training_version is None:
        return None
    paths = consumers.split_files(job.training_version)
    if sum(len(p) for p in paths.values()) < 2:
        return None
    found = paths.get("validation", [])
    return found[0] if len(found) == 1 and found[0].endswith(".jsonl") else None


def build_files(job: FineTuningJob) -> list[dict[str, Any]]:
    """The data files under ``data/`` and the newest complete checkpoint under
    ``resume/``, each with a fresh presigned GET URL (an export's: :func:`build_export_files`)."""
    if job.task == Task.EXPORT:
        return build_export_files(job)
    train = job.training_version
    assert train is not None
    files = [_renamed(train, jobs.data_path(train, "train", "training_file"), TRAIN_FILE)]
    if job.validation_version is not None:
        path = jobs.data_path(job.validation_version, "validation", "validation_file")
        files.append(_renamed(job.validation_version, path, VALID_FILE))
    elif (own := _own_validation(job)) is not None:
        files.append(_renamed(train, own, VALID_FILE))
    latest = latest_checkpoint(job)
    if latest is not None:
        objects = store()
        for entry in latest.files:
            files.append(
                {
                    "path": f"{RESUME_DIR}/{entry['path']}",
                    "size": entry["size"],
                    "sha256": entry["sha256"],
                    "url": objects.presigned_get(
                        CHECKPOINTS_BUCKET, entry["object_key"], URL_TTL_S
                    ),
                }
            )
    return files


def _renamed(version: Any, path: str, name: str) -> dict[str, Any]:
    return {**consumers.file_entry(version, path, URL_TTL_S), "path": name}


class TrainingKind:
    """Registered as the ``training`` workload kind (see :mod:`training.apps`)."""

    entry = "training.runner"

    def describe(self, workload: Any) -> dict[str, Any]:
        job = _job(workload)
        if job is None:
            return {"spec": {}, "files": []}
        return {"spec": build_spec(job, workload.attempt), "files": build_files(job)}

    def on_status(self, workload: Any, old: str, new: str, reason: str) -> None:
        job = _job(workload)
        if job is None or job.is_terminal:
            return
        handler = _HANDLERS.get(new)
        if handler is not None:
            handler(job, workload, old, reason)


def _job(workload: Any) -> FineTuningJob | None:
    return (
        FineTuningJob.objects.select_related(
            "base_version__repo", "training_version", "validation_version", "source_job"
        )
        .filter(pk=workload.ref)
        .first()
    )


def _assigned(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    node = getattr(workload.node, "name", "?")
    gpus = f" (GPUs {workload.gpu_indices})" if workload.gpu_indices else ""
    job.log(f"Placed on node {node}{gpus}, attempt {workload.attempt}")


def _running(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    mark_running(job, workload.attempt)


def mark_running(job: FineTuningJob, attempt: int) -> None:
    """``queued → running`` for ``attempt`` (nothing when it already runs that attempt)."""
    if job.status == FineTuneStatus.RUNNING and job.attempts == attempt:
        return
    if job.status == FineTuneStatus.QUEUED:
        job.transition(FineTuneStatus.RUNNING, "Fine-tuning job started", attempts=attempt)


def _pending(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    """A requeue after a lost or failed run: the job waits for the next attempt."""
    latest = latest_checkpoint(job)
    where = f"checkpoint step {latest.step}" if latest else "the start"
    why = reason or workload.last_error or "runner lost"
    message = f"Runner lost ({why[:300]}); will resume from {where}"
    if job.status == FineTuneStatus.RUNNING:
        job.transition(FineTuneStatus.QUEUED, message)
    elif job.status == FineTuneStatus.QUEUED and old != "pending":
        job.log(message, level="warning")


def _failed(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    if workload.attempt < workload.max_attempts:
        return  # compute requeues it at once; the "pending" change says so
    why = (reason or workload.last_error or "the runner failed").strip()
    jobs.finish(
        job,
        FineTuneStatus.FAILED,
        f"Fine-tuning failed after {workload.attempt} attempt(s): {why[:1500]}",
        code="runner_failed",
    )


def _succeeded(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    # result/complete ends the job before the runner exits; an exit 0 without it is a bug.
    jobs.finish(
        job,
        FineTuneStatus.FAILED,
        "The runner exited without reporting a result.",
        code="no_result",
    )


def _stopped(job: FineTuningJob, workload: Any, old: str, reason: str) -> None:
    job.refresh_from_db(fields=["cancel_requested", "status", "attempts"])
    if job.is_terminal:
        return
    if job.cancel_requested:
        jobs.finish(job, FineTuneStatus.CANCELLED, "Fine-tuning job cancelled")
    else:
        jobs.finish(
            job, FineTuneStatus.FAILED, f"The run was stopped: {reason[:500]}", code="stopped"
        )


_HANDLERS = {
    "assigned": _assigned,
    "running": _running,
    "pending": _pending,
    "failed": _failed,
    "succeeded": _succeeded,
    "stopped": _stopped,
}
