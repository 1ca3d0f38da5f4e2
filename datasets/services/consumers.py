"""What other sub-platforms' jobs (fine-tunes, evaluations) need from a dataset they read:
find the version a client named, say whether it may feed a job yet, estimate its tokens,
and hand out its files with presigned URLs. Jobs waiting for a version's validation may
register a hook that runs once a version settles.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db import transaction

from datasets.models import DatasetJob, DatasetRepo, DatasetVersion, JobKind, VersionState
from datasets.services.files import files_of, summarise
from datasets.services.versions import BUCKET
from portal.errors import NotFound
from portal.models.jobs import JobStatus
from portal.storage import store

READY = "ready"
VALIDATING = "validating"
INVALID = "invalid"
UPLOADING = "uploading"

# ``owner/name`` or ``owner/name@3`` (``@v3`` accepted too).
_DATASET_REF = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9_.-]*)/([A-Za-z0-9][A-Za-z0-9_.-]*)(?:@v?(\d+))?$"
)
BYTES_PER_TOKEN = 4

SettledHook = Callable[[int], None]
_settled_hooks: list[SettledHook] = []


def resolve_input(user: Any, ref: str, param: str) -> DatasetVersion:
    """The dataset version ``ref`` names for ``user``: a ``file-…`` id, ``owner/name@N``,
    or ``owner/name`` (its newest ready version, else its newest). Raises NotFound (404)
    for anything the user may not read, as if it did not exist."""
    ref = ref.strip()
    if ref.startswith("file-"):
        file = files_of(user).filter(pk=ref).first()
        if file is None:
            raise NotFound(f"No such File object: {ref[:64]}", param=param)
        return file.version
    match = _DATASET_REF.match(ref)
    repo = None
    if match:
        repo = (
            DatasetRepo.objects.restrict(user, "read")
            .filter(  # type: ignore[attr-defined]
                namespace=match[1], name=match[2]
            )
            .first()
        )
    if repo is None or match is None:
        raise NotFound(f"No such file or dataset: {ref[:100]}", param=param)
    versions = repo.versions.select_related("repo")
    if match[3] is not None:
        version = versions.filter(number=int(match[3])).first()
    else:
        version = versions.filter(state=VersionState.READY).order_by("-number").first()
        version = version or versions.order_by("-number").first()
    if version is None:
        raise NotFound(f"No such dataset version: {ref[:100]}", param=param)
    return version


def input_state(version: DatasetVersion) -> tuple[str, str]:
    """``(state, detail)``: ``ready``; ``validating`` (the ingest may still settle it);
    ``invalid`` with the validation problems' summary (or why validation could not run);
    ``uploading`` (a browser upload that was never completed)."""
    version.refresh_from_db(fields=["state", "report"])
    if version.state == VersionState.READY:
        return READY, ""
    if version.state == VersionState.INVALID:
        return INVALID, summarise(version.report)
    if version.state == VersionState.UPLOADING:
        return UPLOADING, f"Dataset version {version} was never completed (still uploading)."
    last = DatasetJob.objects.filter(version=version, kind=JobKind.INGEST).order_by("-pk").first()
    if last is not None and last.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        why = (last.error or f"the ingest job was {last.status}").splitlines()[0][:300]
        return INVALID, f"Validation could not run: {why}"
    return VALIDATING, ""


def estimated_tokens(version: DatasetVersion) -> int:
    """Tokens in the version: the sum of its token statistics when a statistics job
    counted them, else its bytes divided by 4."""
    counted = 0
    for file_stats in (version.stats or {}).get("files", {}).values():
        for field in file_stats.get("fields", {}).values():
            counted += int(field.get("tokens", {}).get("sum", 0) or 0)
    if counted:
        return counted
    return max(1, int(version.total_bytes or 0) // BYTES_PER_TOKEN)


def split_files(version: DatasetVersion) -> dict[str, list[str]]:
    """The version's file paths by split (``train``, ``validation``, ``test``)."""
    splits: dict[str, list[str]] = {}
    for path, split in version.files.values_list("path", "split"):
        splits.setdefault(split, []).append(path)
    return splits


def file_entry(version: DatasetVersion, path: str, expires_s: int = 3600) -> dict[str, Any]:
    """``{"path", "size", "sha256", "url"}`` of one file (a fresh presigned GET URL).
    Raises NotFound when the version has no such file."""
    record = version.files.filter(path=path).first()
    if record is None:
        raise NotFound(f"No file '{path[:200]}' in {version}.", param="path")
    url = store().presigned_get(BUCKET, record.object_key, expires_s)
    return {"path": record.path, "size": record.size, "sha256": record.sha256, "url": url}


def version_files(version: DatasetVersion, expires_s: int = 3600) -> list[dict[str, Any]]:
    """Every file of a version as :func:`file_entry` gives it."""
    return [
        file_entry(version, path, expires_s)
        for path in version.files.values_list("path", flat=True)
    ]


def on_settled(hook: SettledHook) -> None:
    """Register ``hook(version_id)``, called after a version's ingest settles it (ready
    or invalid) and that commits. Hooks must be cheap and must not raise."""
    if hook not in _settled_hooks:
        _settled_hooks.append(hook)


def notify_settled(version_id: int) -> None:
    """Run the settled hooks once the current transaction commits."""
    for hook in list(_settled_hooks):
        transaction.on_commit(lambda hook=hook: hook(version_id), robust=True)  # type: ignore[misc]
