"""The dataset hub: repos ``namespace/name`` with immutable, content-addressed versions,
their files, the jobs that ingest, describe and process them, where each version is
used (lineage), and OpenAI-compatible files (``/v1/files``) that are versions too."""

from __future__ import annotations

import secrets
from typing import ClassVar

from django.conf import settings
from django.db import models

from portal.models.accounts import namespace_validator
from portal.models.jobs import Job, JobEvent
from portal.models.ownership import OwnedModel


class Origin(models.TextChoices):
    HUB = "hub", "Dataset hub"
    FILES = "files", "/v1/files"


class DatasetRepo(OwnedModel):
    """A dataset repository; its card is README.md with YAML front matter (HF convention)."""

    name = models.CharField(max_length=96, validators=[namespace_validator])
    description = models.TextField(blank=True)
    card = models.TextField(blank=True, help_text="README.md body")
    card_data = models.JSONField(default=dict, blank=True, help_text="Parsed front matter")
    license = models.CharField(max_length=64, blank=True, db_index=True)
    languages = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    task_categories = models.JSONField(default=list, blank=True)
    size_category = models.CharField(max_length=32, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.HUB)
    star_count = models.PositiveIntegerField(default=0)
    download_count = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_dataset_repo"),
        ]

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"


class DatasetStar(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    repo = models.ForeignKey(DatasetRepo, on_delete=models.CASCADE, related_name="stars")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "repo"], name="unique_dataset_star"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} ★ {self.repo_id}"


class VersionState(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    INGESTING = "ingesting", "Validating"
    READY = "ready", "Valid"
    INVALID = "invalid", "Failed validation"

    SETTLED: ClassVar[frozenset[str]]


VersionState.SETTLED = frozenset({VersionState.READY, VersionState.INVALID})


class VersionOrigin(models.TextChoices):
    UPLOAD = "upload", "Upload"
    FILES = "files", "/v1/files upload"
    PROCESSING = "processing", "Processing run"


class DatasetVersion(models.Model):
    """An immutable snapshot of a repo's files; ``revision`` hashes its manifest (path,
    size and sha256 of every file, plus the parent and processing step when derived).

    Only a ``ready`` version may feed a job; an ``invalid`` one can still be browsed.
    """

    repo = models.ForeignKey(DatasetRepo, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    revision = models.CharField(max_length=64, blank=True, db_index=True)
    state = models.CharField(
        max_length=16, choices=VersionState.choices, default=VersionState.UPLOADING
    )
    origin = models.CharField(
        max_length=16, choices=VersionOrigin.choices, default=VersionOrigin.UPLOAD
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # The processing steps (and their parameters) that made this version from ``parent``.
    steps = models.JSONField(default=list, blank=True)
    message = models.CharField(max_length=200, blank=True)
    format = models.CharField(max_length=32, blank=True)
    rows = models.BigIntegerField(null=True, blank=True)
    total_bytes = models.BigIntegerField(default=0)
    # ``formats.ValidationReport.to_dict()`` merged over files, keyed by file path.
    report = models.JSONField(default=dict, blank=True)
    # Statistics: the result of the last ``statistics`` job, and the tokenizer it used.
    stats = models.JSONField(default=dict, blank=True)
    tokenizer = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["repo", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["repo", "number"], name="unique_dataset_version"),
        ]

    def __str__(self) -> str:
        return f"{self.repo.full_name}@v{self.number}"

    @property
    def usable(self) -> bool:
        return self.state == VersionState.READY


class DatasetFile(models.Model):
    """One file of a version. ``object_key`` is content-addressed once ingested (the
    staging key of the upload before); ``parquet_key`` is the viewer's columnar copy."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)
    split = models.CharField(max_length=64, default="train")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    object_key = models.CharField(max_length=512)
    parquet_key = models.CharField(max_length=512, blank=True)
    rows = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="unique_dataset_file"),
        ]

    def __str__(self) -> str:
        return self.path


class UploadPart(models.Model):
    """A browser upload in progress: an S3 multipart upload the browser PUTs parts to by
    presigned URL, so the bytes never pass through the portal."""

    file = models.OneToOneField(DatasetFile, on_delete=models.CASCADE, related_name="upload")
    upload_id = models.CharField(max_length=255)
    part_size = models.BigIntegerField()
    parts = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"upload {self.upload_id} ({self.parts} parts)"


class JobKind(models.TextChoices):
    INGEST = "ingest", "Validation"
    STATISTICS = "statistics", "Statistics"
    PROCESS = "process", "Processing"


class DatasetJob(Job):
    """Ingest (hash, validate, write the viewer copy), statistics, or a processing run
    from ``version`` to ``output`` (a new version of the same repo)."""

    kind = models.CharField(max_length=16, choices=JobKind.choices)
    repo = models.ForeignKey(DatasetRepo, on_delete=models.CASCADE, related_name="jobs")
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="jobs")
    output = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by"
    )
    params = models.JSONField(default=dict, blank=True)

    event_model: ClassVar[type[JobEvent]]

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} on {self.version}"


class DatasetJobEvent(JobEvent):
    job = models.ForeignKey(DatasetJob, on_delete=models.CASCADE, related_name="events")


DatasetJob.event_model = DatasetJobEvent


class UseKind(models.TextChoices):
    PROCESSING = "processing", "Processing run"
    FINE_TUNE = "fine_tune", "Fine-tuning job"
    EVALUATION = "evaluation", "Evaluation run"


class DatasetUse(models.Model):
    """Lineage: a job that read a version. While ``active`` the version cannot be deleted."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="uses")
    kind = models.CharField(max_length=16, choices=UseKind.choices)
    ref = models.CharField(max_length=64, help_text="The consumer's public id")
    label = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(fields=["version", "kind", "ref"], name="unique_dataset_use"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref} used {self.version_id}"


def file_id() -> str:
    return "file-" + secrets.token_hex(12)


class FilePurpose(models.TextChoices):
    FINE_TUNE = "fine-tune", "fine-tune"
    # Written by the platform (a fine-tune's step metrics CSV), never uploaded.
    FINE_TUNE_RESULTS = "fine-tune-results", "fine-tune-results"
    BATCH = "batch", "batch"
    EVALS = "evals", "evals"
    USER_DATA = "user_data", "user_data"
    ASSISTANTS = "assistants", "assistants"
    VISION = "vision", "vision"


class File(OwnedModel):
    """An OpenAI-compatible file; its bytes are the single file of ``version``."""

    id = models.CharField(primary_key=True, max_length=40, default=file_id, editable=False)
    purpose = models.CharField(max_length=32, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField()
    version = models.OneToOneField(
        DatasetVersion, on_delete=models.PROTECT, related_name="openai_file"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.id
