"""The training sub-platform: OpenAI-compatible fine-tuning jobs, their events and
checkpoints. A job follows the shared job convention (:mod:`portal.models.jobs`) with
OpenAI's extra first state ``validating_files``; its runs on pool nodes are
``compute`` workloads (``kind="training"``, ``ref`` = the job id)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from portal.models import ModelVersion
from portal.models.ids import public_id
from portal.models.jobs import TRANSITIONS, Job, JobEvent, JobStatus
from portal.models.ownership import OwnedModel


def job_id() -> str:
    return public_id("ftjob-")


def checkpoint_id() -> str:
    return public_id("ftckpt-")


class FineTuneStatus(models.TextChoices):
    VALIDATING_FILES = "validating_files", "Validating files"
    QUEUED = JobStatus.QUEUED.value, JobStatus.QUEUED.label
    RUNNING = JobStatus.RUNNING.value, JobStatus.RUNNING.label
    SUCCEEDED = JobStatus.SUCCEEDED.value, JobStatus.SUCCEEDED.label
    FAILED = JobStatus.FAILED.value, JobStatus.FAILED.label
    CANCELLED = JobStatus.CANCELLED.value, JobStatus.CANCELLED.label


class Method(models.TextChoices):
    SUPERVISED = "supervised", "Supervised"
    DPO = "dpo", "Direct preference optimisation"


class Task(models.TextChoices):
    FINE_TUNE = "fine_tune", "Fine-tune"
    EXPORT = "export", "Merge and quantise (compression)"


class FineTuningJob(OwnedModel, Job):
    """One fine-tune (or an export of one: merge a LoRA, quantise). Owned like any
    resource: outsiders get 404. ``hyperparameters`` hold the resolved values (``auto``
    replaced at admission); ``adapter`` the LoRA settings or ``{"type": "full"}``."""

    id = models.CharField(primary_key=True, max_length=40, default=job_id, editable=False)
    status = models.CharField(
        max_length=16,
        choices=FineTuneStatus.choices,
        default=FineTuneStatus.VALIDATING_FILES,
        db_index=True,
    )
    task = models.CharField(max_length=16, choices=Task.choices, default=Task.FINE_TUNE)
    base_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="fine_tuning_jobs"
    )
    # The name the client gave (``openmaas/demo-tiny``), echoed back as ``model``.
    model_name = models.CharField(max_length=200)
    training_version = models.ForeignKey(
        "datasets.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    validation_version = models.ForeignKey(
        "datasets.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # As the client named them (``file-…`` or ``owner/name@N``).
    training_file = models.CharField(max_length=200, blank=True)
    validation_file = models.CharField(max_length=200, blank=True)
    suffix = models.CharField(max_length=64, blank=True)
    seed = models.BigIntegerField()
    metadata = models.JSONField(default=dict, blank=True)
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.SUPERVISED)
    hyperparameters = models.JSONField(default=dict, blank=True)
    # The client's values, ``auto`` kept (OpenAI echoes ``auto`` until the job starts).
    requested_hyperparameters = models.JSONField(default=dict, blank=True)
    adapter = models.JSONField(default=dict, blank=True)
    gpus = models.PositiveIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True)
    priority = models.IntegerField(default=0)
    billing_org = models.ForeignKey(
        "portal.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Export jobs: the fine-tune whose result they merge/quantise, and how.
    source_job = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="exports"
    )
    export = models.JSONField(default=dict, blank=True)
    fine_tuned_model = models.CharField(max_length=300, blank=True, db_index=True)
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result_files = models.JSONField(default=list, blank=True)
    trained_tokens = models.BigIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_param = models.CharField(max_length=64, blank=True)
    estimated_finish = models.DateTimeField(null=True, blank=True)
    # A suite (``namespace/name``) to evaluate the result on once the job succeeds.
    auto_eval = models.CharField(max_length=200, blank=True)

    event_model: ClassVar[type[JobEvent]]
    transitions: ClassVar[dict[str, frozenset[str]]] = {
        **TRANSITIONS,
        FineTuneStatus.VALIDATING_FILES: frozenset(
            {FineTuneStatus.QUEUED, FineTuneStatus.FAILED, FineTuneStatus.CANCELLED}
        ),
    }
    active_statuses: ClassVar[frozenset[str]] = frozenset(
        {FineTuneStatus.VALIDATING_FILES, FineTuneStatus.QUEUED, FineTuneStatus.RUNNING}
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner_user", "status"])]

    def __str__(self) -> str:
        return self.id


class FineTuningEvent(JobEvent):
    """A job's event (``type`` ``message`` or ``metrics``); every transition is one."""

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=16, default="message")

    class Meta(JobEvent.Meta):
        indexes = [models.Index(fields=["job", "type", "id"])]


FineTuningJob.event_model = FineTuningEvent


class FineTuningCheckpoint(models.Model):
    """A checkpoint the runner uploaded: adapter or weights plus optimizer and RNG state,
    under ``training/<job id>/checkpoints/<step>/`` in the object store; the latest is
    where a requeued job resumes."""

    id = models.CharField(primary_key=True, max_length=40, default=checkpoint_id, editable=False)
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    # [{"path", "size", "sha256", "object_key"}]
    files = models.JSONField(default=list, blank=True)
    complete = models.BooleanField(default=False)
    attempt = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_checkpoint_per_step"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}@{self.step}"


__all__ = [
    "FineTuneStatus",
    "FineTuningCheckpoint",
    "FineTuningEvent",
    "FineTuningJob",
    "Method",
    "Task",
]
