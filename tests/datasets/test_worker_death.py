"""A worker killed in the middle of a validation leaves a job that a later pass finishes:
the database is the truth, the Celery message only a nudge."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from compute.agent.procs import stop, wait_for
from datasets import tasks
from datasets.models import DatasetJob, JobKind, VersionState
from datasets.services.repos import create_repo
from datasets.services.versions import LocalFile, add_local_files
from portal.models.jobs import JobStatus
from portal.storage import store
from tests.workers import celery_worker

ROWS = 120_000  # ~24 MB: validation takes a second or more, ample to be killed mid-way


def big_chat_file(path: Path) -> Path:
    row = {"messages": [{"role": "user", "content": "讲一个关于长城的故事。" * 4}]}
    with path.open("w", encoding="utf-8") as out:
        for n in range(ROWS):
            row["messages"][1:] = [{"role": "assistant", "content": f"第{n}个故事：从前……" * 3}]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def job_of(version: Any) -> DatasetJob:
    return DatasetJob.objects.get(version=version, kind=JobKind.INGEST)


def _claimed(job: DatasetJob) -> bool:
    assert job.status not in JobStatus.TERMINAL, "the validation ended before the kill"
    return job.status == JobStatus.RUNNING


def test_a_validation_whose_worker_was_killed_is_finished_by_a_later_pass(
    transactional_db: Any, owner: Any, tmp_path: Path, settings: Any
) -> None:
    repo = create_repo(owner.user, owner.user, "stories")
    source = big_chat_file(tmp_path / "train.jsonl")
    with celery_worker(tmp_path, "doomed") as doomed:
        # given a worker validating a version (progress is written every couple of
        # seconds and a fast box validates in about that, so the claim is what we wait
        # for: waiting for progress raced the job's end)
        version = add_local_files(repo, owner.user, [LocalFile("train.jsonl", source)])
        wait_for(
            lambda: _claimed(job_of(version)),
            timeout_s=120,
            what="the validation to be under way",
            interval_s=0.01,
            ignore=(DatasetJob.DoesNotExist,),
        )
        # when the worker dies mid-way, without any chance to clean up
        stop(doomed, sig=signal.SIGKILL)
    job = job_of(version)
    assert job.status == JobStatus.RUNNING  # died mid-ingest
    assert DatasetJob.objects.get(pk=job.pk).attempts == 1
    # then the sweep (beat) sees its heartbeat stop, queues it again, and a worker
    # started later finishes it
    settings.DATASET_JOB_SILENT_S = 1
    wait_for(
        lambda: job.pk in tasks.sweep_jobs(),
        timeout_s=30,
        what="the sweep to requeue the silent job",
        interval_s=0.1,
    )
    with celery_worker(tmp_path, "survivor"):
        wait_for(
            lambda: job_of(version).status in JobStatus.TERMINAL,
            timeout_s=180,
            what="the requeued validation to finish",
        )
    job = job_of(version)
    version.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    assert (version.state, version.rows) == (VersionState.READY, ROWS)
    record = version.files.get()
    assert record.object_key.startswith(f"repos/{repo.pk}/blobs/")
    assert store().exists("datasets", record.parquet_key)
    events = list(job.events.exclude(new_status="").values_list("new_status", flat=True))
    assert events == ["running", "queued", "running", "succeeded"]
