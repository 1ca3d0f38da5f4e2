"""OpenAI's ``/v1/files`` over real HTTP with the official SDK: upload, validation status,
list paging, content, delete, tenancy, scopes, size limits and errors in OpenAI's shape."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import openai
import pyarrow.parquet as pq
import pytest

from datasets.models import (
    DatasetFile,
    DatasetJob,
    DatasetRepo,
    DatasetVersion,
    File,
    Origin,
    UseKind,
    VersionOrigin,
)
from datasets.services.lineage import record_use, release_use
from datasets.services.versions import BUCKET
from datasets.tasks import run_dataset_job
from portal.models.jobs import JobStatus
from portal.services.keys import create_api_key
from portal.storage import store

CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"What is {n} + {n}?"},
            {"role": "assistant", "content": str(2 * n)},
        ]
    }
    for n in range(3)
]
CHAT_JSONL = b"".join(json.dumps(row).encode() + b"\n" for row in CHAT_ROWS)
BROKEN_JSONL = (
    json.dumps(CHAT_ROWS[0]).encode()
    + b"\n"
    + json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}
    ).encode()
    + b"\n"
    + b'{"messages": [\n'
)


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=30)


def upload(
    client: openai.OpenAI, data: bytes, purpose: Any = "fine-tune", name: str = "train.jsonl"
) -> Any:
    return client.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def run_queued_jobs() -> None:
    """What a Celery worker would do: run every queued dataset job until none is left."""
    while pending := list(
        DatasetJob.objects.filter(status=JobStatus.QUEUED).values_list("pk", flat=True)
    ):
        for pk in pending:
            run_dataset_job(pk)


def stored_objects() -> set[str]:
    objects = store()
    listing = objects.client.list_objects(objects.bucket(BUCKET), recursive=True)
    return {item.object_name for item in listing}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def olivia(live_portal: str, owner: Any) -> openai.OpenAI:
    return sdk(live_portal, owner.key)


def test_sdk_upload_of_a_chat_file_is_processed_browsable_and_deletable(
    live_portal: str, owner: Any, olivia: openai.OpenAI
) -> None:
    created = upload(olivia, CHAT_JSONL)
    assert created.object == "file"
    assert created.id.startswith("file-")
    assert (created.bytes, created.filename, created.purpose) == (
        len(CHAT_JSONL),
        "train.jsonl",
        "fine-tune",
    )
    assert created.status == "uploaded"

    run_queued_jobs()
    retrieved = olivia.files.retrieve(created.id)
    assert retrieved.status == "processed"
    assert retrieved.status_details is None
    assert retrieved.created_at == created.created_at
    assert olivia.files.content(created.id).content == CHAT_JSONL

    version = File.objects.get(pk=created.id).version
    assert version.origin == VersionOrigin.FILES
    assert (version.repo.name, version.repo.origin) == (created.id, Origin.FILES)
    assert version.repo.visibility == "private"
    record = version.files.get()
    viewer_copy = pq.read_table(io.BytesIO(store().get_bytes(BUCKET, record.parquet_key)))
    assert viewer_copy.num_rows == len(CHAT_ROWS)
    keys = {record.object_key, record.parquet_key}

    deleted = olivia.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert not File.objects.exists()
    assert not DatasetRepo.objects.filter(name=created.id).exists()
    assert not keys & stored_objects()
    with pytest.raises(openai.NotFoundError):
        olivia.files.retrieve(created.id)


def test_file_with_planted_errors_is_in_error_with_its_lines_in_status_details(
    olivia: openai.OpenAI,
) -> None:
    created = upload(olivia, BROKEN_JSONL)
    run_queued_jobs()

    retrieved = olivia.files.retrieve(created.id)

    assert retrieved.status == "error"
    details = retrieved.status_details or ""
    assert "Line 2: messages[1].role: invalid_role" in details
    assert "Line 3:" in details
    assert "problems in total" in details


def test_purposes_without_a_format_are_processed_whatever_the_rows(
    olivia: openai.OpenAI,
) -> None:
    created = upload(olivia, b"plain notes, not JSON\n", purpose="user_data", name="notes.txt")
    run_queued_jobs()
    assert olivia.files.retrieve(created.id).status == "processed"


def test_list_filters_by_purpose_and_pages_newest_first_with_after(
    olivia: openai.OpenAI,
) -> None:
    first = upload(olivia, CHAT_JSONL)
    second = upload(olivia, CHAT_JSONL, name="valid.jsonl")
    notes = upload(olivia, b"notes\n", purpose="user_data", name="notes.txt")

    page = olivia.files.list(limit=1)
    assert [f.id for f in page.data] == [notes.id]
    assert page.has_more
    assert [f.id for f in olivia.files.list(limit=1)] == [notes.id, second.id, first.id]
    assert [f.id for f in olivia.files.list(purpose="fine-tune")] == [second.id, first.id]
    oldest_first = olivia.files.list(order="asc", after=first.id)
    assert [f.id for f in oldest_first.data] == [second.id, notes.id]
    assert not oldest_first.has_more


def test_outsider_gets_404_for_the_owners_file_and_does_not_list_it(
    live_portal: str, olivia: openai.OpenAI, outsider: Any
) -> None:
    created = upload(olivia, CHAT_JSONL)
    oscar = sdk(live_portal, outsider.key)

    for call in (oscar.files.retrieve, oscar.files.content, oscar.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert oscar.files.list().data == []
    assert olivia.files.retrieve(created.id).id == created.id


def test_over_limit_uploads_get_413_and_nothing_is_stored(
    live_portal: str, owner: Any, olivia: openai.OpenAI, settings: Any
) -> None:
    settings.FILES_MAX_BYTES = 100
    before = stored_objects()

    # One refused by its Content-Length, one (within the multipart allowance) while read.
    for size in (200_000, 150):
        with pytest.raises(openai.APIStatusError) as refused:
            upload(olivia, b"x" * size)
        assert refused.value.status_code == 413
        assert refused.value.body["code"] == "file_too_large"

    assert not File.objects.exists()
    assert not DatasetRepo.objects.exists()
    assert not DatasetVersion.objects.exists()
    assert stored_objects() == before


def test_upload_without_content_length_gets_411(live_portal: str, owner: Any) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
        f"\r\n{CHAT_JSONL.decode()}\r\n--{boundary}--\r\n"
    ).encode()
    response = httpx.post(
        f"{live_portal}/v1/files",
        content=iter([body]),  # a generator body goes out chunked, with no Content-Length
        headers={
            "Authorization": f"Bearer {owner.key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert_openai_error(response, 411, "length_required")
    assert not File.objects.exists()


def test_file_in_use_cannot_be_deleted_until_released(olivia: openai.OpenAI) -> None:
    created = upload(olivia, CHAT_JSONL)
    run_queued_jobs()
    version = File.objects.get(pk=created.id).version
    record_use(version, UseKind.FINE_TUNE, "ftjob-abc")

    with pytest.raises(openai.ConflictError) as refused:
        olivia.files.delete(created.id)
    assert refused.value.body["code"] == "file_in_use"
    assert olivia.files.content(created.id).content == CHAT_JSONL

    release_use(version, UseKind.FINE_TUNE, "ftjob-abc")
    assert olivia.files.delete(created.id).deleted
    assert not DatasetFile.objects.filter(version=version).exists()


def test_bad_requests_are_400_in_openai_shape(live_portal: str, owner: Any) -> None:
    headers = {"Authorization": f"Bearer {owner.key}"}
    url = f"{live_portal}/v1/files"
    files = {"file": ("train.jsonl", CHAT_JSONL)}

    bad_purpose = httpx.post(url, headers=headers, files=files, data={"purpose": "fun"})
    assert assert_openai_error(bad_purpose, 400, "invalid_purpose")["param"] == "purpose"
    no_file = httpx.post(url, headers=headers, files={"x": ("a", b"")}, data={"purpose": "batch"})
    assert assert_openai_error(no_file, 400)["param"] == "file"
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("after=file-nope", "after")):
        response = httpx.get(f"{url}?{query}", headers=headers)
        assert assert_openai_error(response, 400)["param"] == param
    assert not File.objects.exists()


def test_keys_need_the_files_scopes_and_a_valid_key(live_portal: str, owner: Any) -> None:
    _, reader = create_api_key(owner.user, scopes=["inference", "files:read"])
    _, inference_only = create_api_key(owner.user, scopes=["inference"])

    assert sdk(live_portal, reader).files.list().data == []
    with pytest.raises(openai.PermissionDeniedError) as refused:
        upload(sdk(live_portal, reader), CHAT_JSONL)
    assert refused.value.body["code"] == "insufficient_scope"
    with pytest.raises(openai.PermissionDeniedError):
        sdk(live_portal, inference_only).files.list()
    with pytest.raises(openai.AuthenticationError):
        sdk(live_portal, "sk-not-a-key").files.list()
    anonymous = httpx.get(f"{live_portal}/v1/files")
    assert_openai_error(anonymous, 401, "missing_api_key")
    assert not File.objects.exists()


class CountingStream(io.BytesIO):
    """A request body that remembers how much of it was read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def test_upload_handler_stops_an_over_limit_body_while_it_streams() -> None:
    from django.http.multipartparser import MultiPartParser

    from datasets.v1 import CappedUploadHandler
    from portal.errors import PlatformError

    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
        f"\r\n{'x' * 2_000_000}\r\n--{boundary}--\r\n"
    ).encode()
    stream = CountingStream(body)
    meta = {
        "CONTENT_TYPE": f"multipart/form-data; boundary={boundary}",
        "CONTENT_LENGTH": str(len(body)),
    }
    parser = MultiPartParser(meta, stream, [CappedUploadHandler(None, 1000)])

    with pytest.raises(PlatformError) as refused:
        parser.parse()

    assert refused.value.status == 413
    assert stream.consumed < len(body) // 2


def test_a_file_whose_ingest_failed_is_in_error_rather_than_uploaded_forever(
    olivia: openai.OpenAI,
) -> None:
    created = upload(olivia, CHAT_JSONL)
    record = File.objects.get(pk=created.id).version.files.get()
    store().delete(BUCKET, record.object_key)  # the ingest cannot read the upload

    run_queued_jobs()

    retrieved = olivia.files.retrieve(created.id)
    assert retrieved.status == "error"
    assert (retrieved.status_details or "").startswith("Validation could not run")
    assert [f.status for f in olivia.files.list().data] == ["error"]
