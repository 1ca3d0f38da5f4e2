"""Shared dataset test helpers: files written from rows or raw lines, a tiny word-level
tokenizer built on the spot (no downloads), and repos with a version made from JSONL
text, ingested by running the queued jobs the way a worker would (the Celery task
function, in process)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from datasets.formats import TokenCounter
from datasets.models import DatasetJob, DatasetRepo, DatasetVersion
from datasets.services.repos import create_repo
from datasets.services.versions import LocalFile, add_local_files
from datasets.tasks import run_dataset_job
from portal.models.jobs import JobStatus

WORDS = ("hello", "world", "hi", "there", "be", "brief", "user", "assistant", "system")


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[..., Path]:
    """Writes rows (dicts are dumped, bytes written as they are) one per line."""

    def write(*rows: Any, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, bytes) else orjson.dumps(row) for row in rows]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path

    return write


@pytest.fixture
def tiny_tokens(tmp_path: Path) -> Callable[[int | None], TokenCounter]:
    """A TokenCounter over a word-level tokenizer: one token per word or punctuation
    run, with ``<|fence|>`` as its special token."""
    vocab = {"[UNK]": 0, **{word: index + 1 for index, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|fence|>"])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))

    def build(context_length: int | None = None) -> TokenCounter:
        return TokenCounter.from_file(path, context_length)

    return build


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
