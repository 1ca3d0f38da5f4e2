"""Shared dataset fixtures: repos with a version made from JSONL text, ingested by
running the queued jobs the way a worker would (the Celery task function, in process)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datasets.models import DatasetJob, DatasetRepo, DatasetVersion
from datasets.services.repos import create_repo
from datasets.services.versions import LocalFile, add_local_files
from datasets.tasks import run_dataset_job
from portal.models.jobs import JobStatus

CHAT_JSONL = (
    '{"messages":[{"role":"user","content":"你好，今天天气怎么样？"},'
    '{"role":"assistant","content":"今天晴天。"}],"score":3}\n'
    '{"messages":[{"role":"user","content":"What is the capital of France?"},'
    '{"role":"assistant","content":"Paris."}],"score":5}\n'
    '{"messages":[{"role":"user","content":"Tell me a joke"},'
    '{"role":"assistant","content":"Why did the chicken cross the road?"}],"score":1}\n'
)


def run_queued_jobs() -> list[DatasetJob]:
    """Run every queued dataset job (and those they queue) to the end, oldest first."""
    ran: list[DatasetJob] = []
    while job := DatasetJob.objects.filter(status=JobStatus.QUEUED).order_by("pk").first():
        run_dataset_job(job.pk)
        job.refresh_from_db()
        ran.append(job)
    return ran


def add_version(
    repo: DatasetRepo, user: Any, files: dict[str, str], *, ingest: bool = True
) -> DatasetVersion:
    """A version of ``repo`` made of ``files`` (name → text), ingested unless told not to."""
    with tempfile.TemporaryDirectory() as tmp:
        local = []
        for name, text in files.items():
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            local.append(LocalFile(name, path))
        version = add_local_files(repo, user, local)
    if ingest:
        run_queued_jobs()
    version.refresh_from_db()
    return version


@pytest.fixture
def make_dataset(db: Any) -> Callable[..., DatasetRepo]:
    """``make_dataset(user, name, visibility=…, owner=…, files={name: text} | None)``."""

    def make(
        user: Any,
        name: str,
        *,
        visibility: str = "private",
        owner: Any = None,
        files: dict[str, str] | None = None,
        ingest: bool = True,
    ) -> DatasetRepo:
        repo = create_repo(user, owner or user, name, visibility=visibility)
        if files:
            add_version(repo, user, files, ingest=ingest)
        return repo

    return make
