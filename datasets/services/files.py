"""OpenAI-compatible files (``/v1/files``): each upload is a private dataset repo of its
own, named after the file id, whose single version holds the file. The file's OpenAI
``status`` is read off that version: ``uploaded`` while it is ingested, ``processed``
once it is valid (or merely ingested, for purposes that expect no format), ``error``
with the first problems of the validation report otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery

from datasets.models import (
    DatasetFile,
    DatasetJob,
    DatasetRepo,
    DatasetUse,
    DatasetVersion,
    File,
    FilePurpose,
    JobKind,
    Origin,
    VersionOrigin,
    VersionState,
    file_id,
)
from datasets.services.repos import create_repo
from datasets.services.versions import (
    BUCKET,
    LocalFile,
    check_file_name,
    record_version,
    store_local_files,
)
from portal.errors import Conflict, PlatformError
from portal.models import Visibility
from portal.models.jobs import JobStatus
from portal.storage import store

# The purposes a /v1/files upload may have, and the dataset formats each expects
# (None: any file is ``processed`` once ingested). OpenAI's own evals rows are
# ``{"item": {...}}`` objects of any schema; the platform's evaluation runs read chat,
# multiple-choice or prompt/completion rows, so those are what an evals file must hold.
EXPECTED_FORMATS: dict[str, list[str] | None] = {
    FilePurpose.FINE_TUNE: ["chat", "preference", "prompt_completion"],
    FilePurpose.EVALS: ["chat", "multiple_choice", "prompt_completion"],
    FilePurpose.BATCH: None,
    FilePurpose.USER_DATA: None,
}
PURPOSES = tuple(str(purpose) for purpose in EXPECTED_FORMATS)
LISTED_PROBLEMS = 3

UPLOADED = "uploaded"
PROCESSED = "processed"
ERROR = "error"


@dataclass(frozen=True)
class FilePage:
    """One page of a user's files, newest first unless asked otherwise."""

    files: list[File]
    has_more: bool


def check_purpose(purpose: str) -> str:
    """Raise a 400 (param ``purpose``) unless files may be uploaded for ``purpose``."""
    if purpose not in EXPECTED_FORMATS:
        raise PlatformError(
            f"'{purpose[:40]}' is not a supported purpose; use one of: {', '.join(PURPOSES)}.",
            code="invalid_purpose",
            param="purpose",
        )
    return purpose


def check_size(size: int, limit: int | None = None) -> None:
    """Raise a 413 when ``size`` bytes is over ``limit`` (default ``FILES_MAX_BYTES``)."""
    limit = settings.FILES_MAX_BYTES if limit is None else limit
    if size > limit:
        raise PlatformError(
            f"The file is over the limit of {limit} bytes.",
            code="file_too_large",
            param="file",
            status=413,
        )


def create_file(user: Any, uploaded_path: Path, filename: str, purpose: str) -> File:
    """Store the file at ``uploaded_path`` as a new private dataset repo of ``user`` and
    queue its validation; return the File (``uploaded`` until the ingest settles).

    Raises PlatformError: 400 for a bad purpose or file name, 413 over ``FILES_MAX_BYTES``
    (both before anything is stored).
    """
    check_purpose(purpose)
    return _create_file(user, uploaded_path, filename, purpose)


def create_result_file(user: Any, path: Path, filename: str) -> File:
    """A ``fine-tune-results`` file of ``user`` (the platform writes these; clients only
    read them): a fine-tune's step metrics as CSV."""
    return _create_file(user, path, filename, FilePurpose.FINE_TUNE_RESULTS)


def _create_file(user: Any, uploaded_path: Path, filename: str, purpose: str) -> File:
    name = check_file_name(filename, param="file")
    size = uploaded_path.stat().st_size
    check_size(size)
    pk = file_id()
    repo = create_repo(user, user, pk, description=f"{name} ({purpose})", origin=Origin.FILES)
    try:
        blobs = store_local_files(repo, [LocalFile(name, uploaded_path)], settings.FILES_MAX_BYTES)
        with transaction.atomic():
            version = record_version(
                repo,
                user,
                blobs,
                origin=VersionOrigin.FILES,
                message=f"/v1/files upload, purpose {purpose}",
                ingest_params={"expected": EXPECTED_FORMATS.get(purpose)},
            )
            file = File(id=pk, purpose=purpose, filename=name, bytes=size, version=version)
            file.set_owner(user)
            file.visibility = Visibility.PRIVATE
            file.save(force_insert=True)
    except BaseException:
        _discard_repo(repo)
        raise
    return file


def _discard_repo(repo: DatasetRepo) -> None:
    """Undo a half-made file: its repo's rows and whatever objects reached the store."""
    keys = _object_keys(repo)
    repo.delete()
    _delete_objects(keys)


def _object_keys(repo: DatasetRepo) -> list[str]:
    """Every object of ``repo``; blob keys are per repo, so none is shared with another."""
    records = DatasetFile.objects.filter(version__repo=repo).values_list(
        "object_key", "parquet_key"
    )
    keys = {key for pair in records for key in pair if key}
    return sorted(keys)


def _delete_objects(keys: list[str]) -> None:
    objects = store()
    for key in keys:
        objects.delete(BUCKET, key)


def delete_file(file: File) -> None:
    """Delete the file, its version, its objects and its repo.

    Raises Conflict (``file_in_use``) while a job uses the version; the version row is
    locked while that is checked, so a use recorded concurrently either comes first
    (and refuses the delete) or fails on the deleted version.
    """
    repo = file.version.repo
    keys = _object_keys(repo)
    with transaction.atomic():
        DatasetVersion.objects.select_for_update().filter(pk=file.version_id).first()
        if DatasetUse.objects.filter(version__repo=repo, active=True).exists():
            raise Conflict(
                f"File {file.pk} is in use by a job and cannot be deleted until it ends.",
                code="file_in_use",
            )
        File.objects.filter(pk=file.pk).delete()
        DatasetUse.objects.filter(version__repo=repo).delete()
        repo.delete()
    # Objects go only once no row points at them any more.
    _delete_objects(keys)


def files_of(user: Any, action: str = "read") -> QuerySet[File]:
    """The files ``user`` may ``read`` or ``write`` (the tenancy filter), each with the
    status and error of its version's last ingest job, so a page of them costs one query."""
    ingests = DatasetJob.objects.filter(version=OuterRef("version_id"), kind=JobKind.INGEST)
    last = ingests.order_by("-pk")
    return (
        File.objects.restrict(user, action)  # type: ignore[arg-type]
        .select_related("version")
        .annotate(
            ingest_status=Subquery(last.values("status")[:1]),
            ingest_error=Subquery(last.values("error")[:1]),
        )
    )


def list_files(
    user: Any,
    *,
    purpose: str | None = None,
    limit: int = 10_000,
    after: str | None = None,
    order: str = "desc",
) -> FilePage:
    """The user's own files by ``created_at`` (then id), after the file ``after``.

    Raises PlatformError (400) for an unknown purpose or an ``after`` that is not one of
    the user's files.
    """
    files = files_of(user).filter(owner_user=user)
    if purpose is not None:
        if purpose not in FilePurpose.values:
            raise PlatformError(f"'{purpose[:40]}' is not a file purpose.", param="purpose")
        files = files.filter(purpose=purpose)
    descending = order == "desc"
    if after:
        anchor = files_of(user).filter(owner_user=user, pk=after).first()
        if anchor is None:
            raise PlatformError(f"No file '{after[:64]}' to list after.", param="after")
        files = files.filter(_beyond(anchor, descending))
    keys = ("-created_at", "-id") if descending else ("created_at", "id")
    page = list(files.order_by(*keys).defer("version__report")[: limit + 1])
    return FilePage(page[:limit], len(page) > limit)


def _beyond(anchor: File, descending: bool) -> Q:
    """Files after ``anchor`` in the listing's order."""
    if descending:
        return Q(created_at__lt=anchor.created_at) | Q(
            created_at=anchor.created_at, id__lt=anchor.pk
        )
    return Q(created_at__gt=anchor.created_at) | Q(created_at=anchor.created_at, id__gt=anchor.pk)


def file_status(file: File) -> tuple[str, str | None]:
    """OpenAI's ``(status, status_details)`` of ``file``, read off its version."""
    version = file.version
    if version.state not in VersionState.SETTLED:
        failed = _failed_ingest(file)
        return (ERROR, f"Validation could not run: {failed}") if failed else (UPLOADED, None)
    if EXPECTED_FORMATS.get(file.purpose) is None or version.state == VersionState.READY:
        return PROCESSED, None
    return ERROR, summarise(version.report)


def _failed_ingest(file: File) -> str | None:
    """Why the last ingest job of the file's version ended without settling it (failed or
    cancelled), or None while it may still settle. Read from :func:`files_of`'s
    annotations when the file came from there."""
    if hasattr(file, "ingest_status"):
        status, error = getattr(file, "ingest_status"), getattr(file, "ingest_error")  # noqa: B009
    else:
        job = (
            DatasetJob.objects.filter(version_id=file.version_id, kind=JobKind.INGEST)
            .order_by("-pk")
            .first()
        )
        status, error = (job.status, job.error) if job else (None, "")
    if status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        return None
    return (error or f"the ingest job was {status}").splitlines()[0][:300]


def summarise(report: dict[str, Any]) -> str:
    """The first problems of a version's validation report, with their lines, and the
    total: ``Line 3: messages[1].role: invalid_role (…); …; 12 problems in total``."""
    problems = [p for file_report in report.values() for p in file_report.get("problems", [])]
    total = sum(sum(r.get("problem_counts", {}).values()) for r in report.values())
    if not problems:
        return "The file holds no rows of a known format."
    listed = "; ".join(_problem_text(p) for p in problems[:LISTED_PROBLEMS])
    noun = "problem" if total == 1 else "problems"
    return f"{listed}; {total} {noun} in total."


def _problem_text(problem: dict[str, Any]) -> str:
    where = f"Line {problem['line']}" if problem.get("line") else "File"
    field = f" {problem['field']}:" if problem.get("field") else ""
    return f"{where}:{field} {problem['reason']} ({problem['message']})"


def content_of(file: File) -> Iterator[bytes]:
    """The file's bytes, streamed from the store."""
    record = file.version.files.get()
    return store().stream(BUCKET, record.object_key)
