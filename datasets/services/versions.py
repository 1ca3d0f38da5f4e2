"""Dataset versions: made from local files (``/v1/files``, the API, processing runs) or
from a browser's presigned multipart upload; ingested by a job; downloaded; deleted.

A version's files land in the object store before its rows commit (local files) or
under staging keys (browser uploads), and reach their content-addressed keys during
ingest, so a failed upload never leaves a half-written version that looks complete.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from datasets.models import (
    DatasetFile,
    DatasetJob,
    DatasetRepo,
    DatasetUse,
    DatasetVersion,
    JobKind,
    UploadPart,
    VersionOrigin,
    VersionState,
)
from portal.errors import Conflict, PlatformError
from portal.storage import dataset_blob_key, dataset_staging_key, sha256_file, store

BUCKET = "datasets"
_FILE_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "eval": "test",
}


class DatasetError(PlatformError):
    code = "invalid_dataset"


@dataclass(frozen=True)
class LocalFile:
    """A file on this host to add to a version under ``name``."""

    name: str
    path: Path


def check_file_name(name: str, param: str = "path") -> str:
    """A file name is a label, never part of an object key; still keep it tidy."""
    if not _FILE_NAME.match(name) or name.startswith(".") or name.strip() != name:
        raise DatasetError(
            f"'{name[:80]}' is not a valid file name (no slashes or control characters, "
            "at most 200 characters, not starting with a dot).",
            param=param,
        )
    return name


def split_of(name: str) -> str:
    """``validation.jsonl`` → ``validation``; names that say nothing are ``train``."""
    stem = name.rsplit(".", 1)[0].lower()
    for part in re.split(r"[-_.\s]+", stem)[::-1]:
        if part in SPLIT_ALIASES:
            return SPLIT_ALIASES[part]
    return "train"


def _check_sizes(sizes: Sequence[int], limit: int | None = None) -> None:
    limit = limit or settings.DATASET_MAX_FILE_BYTES
    if not sizes:
        raise DatasetError("A version needs at least one file.", param="files")
    if len(sizes) > settings.DATASET_MAX_FILES_PER_VERSION:
        raise DatasetError(
            f"At most {settings.DATASET_MAX_FILES_PER_VERSION} files per version.", param="files"
        )
    for size in sizes:
        if size > limit:
            raise DatasetError(
                f"A file of {size} bytes is over the limit of {limit} bytes.",
                code="file_too_large",
                param="files",
                status=413,
            )


def _new_version(repo: DatasetRepo, user: Any, **fields: Any) -> DatasetVersion:
    """Create the next-numbered version; a concurrent creator makes us take the next."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                number = (repo.versions.aggregate(n=Max("number"))["n"] or 0) + 1
                return DatasetVersion.objects.create(
                    repo=repo, number=number, created_by=user, **fields
                )
        except IntegrityError:
            continue
    raise Conflict("Could not allocate a version number; try again.")


@dataclass(frozen=True)
class StoredBlob:
    """A local file now in the store under its content-addressed key."""

    name: str
    sha256: str
    key: str
    size: int


def add_local_files(
    repo: DatasetRepo,
    user: Any,
    files: Sequence[LocalFile],
    *,
    origin: str = VersionOrigin.UPLOAD,
    parent: DatasetVersion | None = None,
    steps: list[dict[str, Any]] | None = None,
    message: str = "",
    ingest_params: dict[str, Any] | None = None,
    size_limit: int | None = None,
) -> DatasetVersion:
    """Upload ``files`` content-addressed, then record a new version and queue its ingest.

    Raises DatasetError for bad names, too many or too large files (checked before
    anything is stored).
    """
    blobs = store_local_files(repo, files, size_limit)
    return record_version(
        repo,
        user,
        blobs,
        origin=origin,
        parent=parent,
        steps=steps,
        message=message,
        ingest_params=ingest_params,
    )


def store_local_files(
    repo: DatasetRepo, files: Sequence[LocalFile], size_limit: int | None = None
) -> list[StoredBlob]:
    """Check names and sizes, then put each file at its content-addressed key of ``repo``
    (outside any transaction). Raises DatasetError before anything is stored."""
    names = [check_file_name(f.name) for f in files]
    if len(set(names)) != len(names):
        raise DatasetError("Two files have the same name.", param="files")
    _check_sizes([f.path.stat().st_size for f in files], size_limit)
    objects = store()
    blobs = []
    for local in files:
        sha = sha256_file(local.path)
        key = dataset_blob_key(repo.pk, sha)
        if not objects.exists(BUCKET, key):
            objects.put_file(BUCKET, key, local.path)
        blobs.append(StoredBlob(local.name, sha, key, local.path.stat().st_size))
    return blobs


def record_version(
    repo: DatasetRepo,
    user: Any,
    blobs: Sequence[StoredBlob],
    *,
    origin: str = VersionOrigin.UPLOAD,
    parent: DatasetVersion | None = None,
    steps: list[dict[str, Any]] | None = None,
    message: str = "",
    ingest_params: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Record a version of stored ``blobs`` and queue its ingest, in one transaction
    (the caller's, when it holds one: the ingest is sent once that commits)."""
    with transaction.atomic():
        version = _new_version(
            repo,
            user,
            state=VersionState.INGESTING,
            origin=origin,
            parent=parent,
            steps=steps or [],
            message=message[:200],
            total_bytes=sum(blob.size for blob in blobs),
        )
        DatasetFile.objects.bulk_create(
            DatasetFile(
                version=version,
                path=blob.name,
                split=split_of(blob.name),
                size=blob.size,
                sha256=blob.sha256,
                object_key=blob.key,
            )
            for blob in blobs
        )
        queue_job(version, JobKind.INGEST, user, ingest_params or {})
    return version


def start_upload(
    repo: DatasetRepo, user: Any, files: Sequence[tuple[str, int]], message: str = ""
) -> tuple[DatasetVersion, list[dict[str, Any]]]:
    """Open a browser upload: a version in ``uploading`` and, per file, an S3 multipart
    upload with one presigned PUT URL per part. Sizes are checked before anything."""
    names = [check_file_name(name) for name, _ in files]
    if len(set(names)) != len(names):
        raise DatasetError("Two files have the same name.", param="files")
    _check_sizes([size for _, size in files])
    if any(size <= 0 for _, size in files):
        raise DatasetError("An empty file cannot be uploaded.", code="empty_file", param="files")
    part_size = settings.DATASET_UPLOAD_PART_BYTES
    objects = store()
    plan = []
    with transaction.atomic():
        version = _new_version(
            repo,
            user,
            state=VersionState.UPLOADING,
            message=message[:200],
            total_bytes=sum(size for _, size in files),
        )
        for name, size in files:
            record = DatasetFile.objects.create(
                version=version, path=name, split=split_of(name), size=size, object_key=""
            )
            record.object_key = dataset_staging_key(record.pk)
            record.save(update_fields=["object_key"])
            parts = max(1, -(-size // part_size))
            upload_id = objects.start_multipart(BUCKET, record.object_key)
            UploadPart.objects.create(
                file=record, upload_id=upload_id, part_size=part_size, parts=parts
            )
            urls = [
                objects.presigned_part(BUCKET, record.object_key, upload_id, n)
                for n in range(1, parts + 1)
            ]
            plan.append({"path": name, "size": size, "part_size": part_size, "urls": urls})
    return version, plan


def complete_upload(
    version: DatasetVersion, user: Any, etags: dict[str, list[str]]
) -> DatasetVersion:
    """Finish every file's multipart upload (``etags`` by path, in part order), check
    the stored sizes, and queue the ingest. Raises DatasetError (the upload is kept for
    a retry) or Conflict when the version is no longer uploading."""
    if version.state != VersionState.UPLOADING:
        raise Conflict("This version is not being uploaded.", code="not_uploading")
    objects = store()
    files = list(version.files.select_related("upload"))
    for record in files:
        tags = etags.get(record.path)
        if not isinstance(tags, list) or len(tags) != record.upload.parts:
            raise DatasetError(
                f"Expected {record.upload.parts} part ETags for {record.path}.",
                param=f"parts.{record.path}",
            )
        try:
            objects.complete_multipart(BUCKET, record.object_key, record.upload.upload_id, tags)
        except Exception as exc:  # the S3 server says which part is missing or wrong
            raise DatasetError(f"{record.path}: the upload is incomplete ({exc}).") from exc
        stored = objects.size(BUCKET, record.object_key)
        if stored != record.size:
            raise DatasetError(
                f"{record.path}: {stored} bytes arrived, {record.size} were announced.",
                param=f"parts.{record.path}",
            )
    with transaction.atomic():
        moved = DatasetVersion.objects.filter(pk=version.pk, state=VersionState.UPLOADING).update(
            state=VersionState.INGESTING
        )
        if not moved:
            raise Conflict("This version is not being uploaded.", code="not_uploading")
        UploadPart.objects.filter(file__version=version).delete()
        queue_job(version, JobKind.INGEST, user, {})
    version.state = VersionState.INGESTING
    return version


def queue_job(version: DatasetVersion, kind: str, user: Any, params: dict[str, Any]) -> DatasetJob:
    """Record a job and send it to a worker once the transaction commits."""
    from datasets import tasks

    job = DatasetJob.objects.create(
        kind=kind, repo_id=version.repo_id, version=version, params=params, created_by=user
    )
    job.log(f"{kind} queued")
    transaction.on_commit(lambda: tasks.run_dataset_job.delay(job.pk))
    return job


def require_usable(version: DatasetVersion) -> DatasetVersion:
    """Raise unless a job may start on ``version`` (it passed validation)."""
    if version.state == VersionState.READY:
        return version
    reasons: dict[str, str] = {
        VersionState.UPLOADING: "is still being uploaded",
        VersionState.INGESTING: "is still being validated",
        VersionState.INVALID: "failed validation; fix the problems in its report first",
    }
    reason = reasons.get(version.state, "is not ready")
    raise Conflict(f"Dataset version {version} {reason}.", code="dataset_not_ready")


def download_url(version: DatasetVersion, path: str) -> str:
    """A presigned URL for one file; counts a download."""
    record = version.files.filter(path=path).first()
    if record is None or version.state == VersionState.UPLOADING:
        from portal.errors import NotFound

        raise NotFound(f"No file '{path[:200]}' in {version}.", param="path")
    DatasetRepo.objects.filter(pk=version.repo_id).update(download_count=F("download_count") + 1)
    return store().presigned_get(BUCKET, record.object_key)


def delete_version(version: DatasetVersion) -> None:
    """Hard-delete a version; refused while a job uses it or a file is made of it."""
    if DatasetUse.objects.filter(version=version, active=True).exists():
        raise Conflict(f"{version} is in use by a job.", code="dataset_in_use")
    if hasattr(version, "openai_file"):
        raise Conflict(f"{version} is the file {version.openai_file.pk}.", code="dataset_in_use")
    refuse_while_jobs_run(version.jobs.all())
    delete_version_objects(version)
    with transaction.atomic():
        DatasetUse.objects.filter(version=version).delete()
        version.delete()


def refuse_while_jobs_run(jobs: Any) -> None:
    """Raise Conflict while any of ``jobs`` is queued or running (it reads the objects)."""
    from portal.models.jobs import JobStatus

    if jobs.filter(status__in=JobStatus.ACTIVE).exists():
        raise Conflict(
            "A job is still working on this dataset; cancel it or wait.", code="dataset_busy"
        )


def delete_repo_objects(repo: DatasetRepo) -> None:
    """Remove every object of every version of ``repo`` (keys are never shared across
    repos; within one, versions share blobs, so per-version deletion would keep them)."""
    objects = store()
    files = DatasetFile.objects.filter(version__repo=repo).select_related("upload")
    keys: set[str] = set()
    for record in files:
        upload = getattr(record, "upload", None)
        if upload is not None:
            objects.abort_multipart(BUCKET, record.object_key, upload.upload_id)
        keys.update(key for key in (record.object_key, record.parquet_key) if key)
    for key in keys:
        objects.delete(BUCKET, key)


def delete_version_objects(version: DatasetVersion) -> None:
    """Remove the version's objects that no other version of the repo shares."""
    objects = store()
    for record in version.files.select_related("upload"):
        upload = getattr(record, "upload", None)
        if upload is not None:
            objects.abort_multipart(BUCKET, record.object_key, upload.upload_id)
        shared = (
            DatasetFile.objects.filter(object_key=record.object_key, version__repo=version.repo)
            .exclude(pk=record.pk)
            .exists()
        )
        if record.object_key and not shared:
            objects.delete(BUCKET, record.object_key)
        if record.parquet_key:
            objects.delete(BUCKET, record.parquet_key)


def settle(version: DatasetVersion, state: str, **fields: Any) -> None:
    """Ingest's last word: ``ready`` or ``invalid``, with the revision and report."""
    DatasetVersion.objects.filter(pk=version.pk).update(
        state=state, settled_at=timezone.now(), **fields
    )
    for name, value in {"state": state, **fields}.items():
        setattr(version, name, value)
    from datasets.services.consumers import notify_settled

    notify_settled(version.pk)
