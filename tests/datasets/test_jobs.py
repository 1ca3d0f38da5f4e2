"""The dataset jobs on the shared job convention: claim by compare-and-swap, cancel,
requeue after a worker dies, and an ingest that a later pass finishes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from datasets import tasks
from datasets.models import DatasetJob, JobKind, VersionState
from datasets.services.repos import create_repo
from datasets.services.versions import DatasetError, LocalFile, add_local_files
from portal.errors import Conflict
from portal.jobs import request_cancel
from portal.models.jobs import JobStatus
from portal.storage import dataset_blob_key, store

CHAT = (
    '{"messages": [{"role": "user", "content": "你好"}, '
    '{"role": "assistant", "content": "你好！"}]}\n'
    '{"messages": [{"role": "user", "content": "2+2?"}, '
    '{"role": "assistant", "content": "4"}]}\n'
)


@pytest.fixture
def chat_file(tmp_path: Path) -> LocalFile:
    path = tmp_path / "train.jsonl"
    path.write_text(CHAT, encoding="utf-8")
    return LocalFile("train.jsonl", path)


@pytest.fixture
def repo(owner: Any) -> Any:
    return create_repo(owner.user, owner.user, "greetings")


@pytest.fixture
def queued(
    repo: Any, owner: Any, chat_file: LocalFile, django_capture_on_commit_callbacks: Any
) -> Any:
    """A version whose ingest is queued; its message is not sent (no worker here)."""
    with django_capture_on_commit_callbacks(execute=False):
        return add_local_files(repo, owner.user, [chat_file])


def ingest_job(version: Any) -> DatasetJob:
    return DatasetJob.objects.get(version=version, kind=JobKind.INGEST)


def test_a_job_runs_once_however_often_its_message_arrives(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a version whose ingest is queued (the message is not sent: no worker here)
    version = queued
    job = ingest_job(version)
    # when the message arrives twice
    tasks.run_dataset_job(job.pk)
    tasks.run_dataset_job(job.pk)
    # then it ran once and the version settled
    job.refresh_from_db()
    version.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    assert version.state == VersionState.READY and version.rows == 2
    statuses = list(job.events.exclude(new_status="").values_list("new_status", flat=True))
    assert statuses == [JobStatus.RUNNING, JobStatus.SUCCEEDED]


def test_a_job_whose_worker_died_is_requeued_and_finished_by_a_later_pass(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given an ingest that a worker claimed and then died in (running, heartbeat stopped)
    version = queued
    job = ingest_job(version)
    assert job.transition(JobStatus.RUNNING, "claimed by a worker that then died", attempts=1)
    long_ago = timezone.now() - timedelta(hours=1)
    DatasetJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago, created_at=long_ago)
    # when the sweep runs (beat) — it requeues and resends; here we run the resend inline
    with django_capture_on_commit_callbacks(execute=False):
        resent = tasks.sweep_jobs()
    assert job.pk in resent
    tasks.run_dataset_job(job.pk)
    # then the job finished and the version is ready, with a record of the requeue
    job.refresh_from_db()
    version.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    assert version.state == VersionState.READY
    assert job.events.filter(new_status=JobStatus.QUEUED, old_status=JobStatus.RUNNING).exists()


def test_a_queued_job_cancels_at_once_and_a_finished_one_cannot(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    version = queued
    job = request_cancel(ingest_job(version))
    assert job.status == JobStatus.CANCELLED
    tasks.run_dataset_job(job.pk)  # a late message does nothing
    assert DatasetJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    with pytest.raises(Conflict):
        request_cancel(job)


def test_an_over_limit_file_is_refused_before_anything_is_stored(
    repo: Any, owner: Any, tmp_path: Path, settings: Any
) -> None:
    settings.DATASET_MAX_FILE_BYTES = 100
    path = tmp_path / "big.jsonl"
    path.write_text(CHAT * 10, encoding="utf-8")
    with pytest.raises(DatasetError) as refused:
        add_local_files(repo, owner.user, [LocalFile("big.jsonl", path)])
    assert refused.value.status == 413
    assert not repo.versions.exists()
    from portal.storage import sha256_file

    assert not store().exists("datasets", dataset_blob_key(repo.pk, sha256_file(path)))


def test_a_processing_run_cancelled_while_queued_releases_its_input(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from datasets.models import DatasetUse
    from datasets.services.jobs import start_processing
    from datasets.services.versions import delete_version

    version = queued
    tasks.run_dataset_job(ingest_job(version).pk)
    version.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        job = start_processing(version, owner.user, [{"step": "dedup_exact"}])
    request_cancel(job)
    tasks.run_dataset_job(job.pk)  # its message arrives after the cancel
    assert not DatasetUse.objects.filter(version=version, active=True).exists()
    DatasetJob.objects.filter(version=version).delete()  # the statistics job it queued
    delete_version(version)
    assert not repo.versions.exists()


def test_deleting_a_repo_removes_blobs_its_versions_shared(
    repo: Any, owner: Any, chat_file: LocalFile, django_capture_on_commit_callbacks: Any
) -> None:
    from datasets.services.repos import delete_repo

    with django_capture_on_commit_callbacks(execute=False):
        first = add_local_files(repo, owner.user, [chat_file])
        add_local_files(repo, owner.user, [chat_file])  # same bytes: one blob
    key = first.files.get().object_key
    DatasetJob.objects.all().delete()
    delete_repo(repo)
    assert not store().exists("datasets", key)


def test_an_attempt_presumed_dead_cannot_finish_the_job_a_later_attempt_runs(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    version = queued
    slow = ingest_job(version)
    assert slow.transition(JobStatus.RUNNING, "first attempt", attempts=1)
    # the sweep requeues it and a second attempt claims it
    again = DatasetJob.objects.get(pk=slow.pk)
    assert again.transition(JobStatus.QUEUED, "requeued")
    assert again.transition(JobStatus.RUNNING, "second attempt", attempts=2)
    # the first attempt, still alive, may not finish it
    assert not slow.transition(JobStatus.SUCCEEDED, "first attempt done")
    assert DatasetJob.objects.get(pk=slow.pk).status == JobStatus.RUNNING


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(
    queued: Any, repo: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from portal.jobs import MAX_ATTEMPTS, requeue_stale

    version = queued
    job = ingest_job(version)
    assert job.transition(JobStatus.RUNNING, "last try", attempts=MAX_ATTEMPTS)
    DatasetJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert requeue_stale(DatasetJob, 60) == []
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "3 times" in job.error
