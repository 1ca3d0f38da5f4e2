"""The object store client: one small module over the ``minio`` SDK (S3 API).

MinIO in production, SeaweedFS locally and in tests. Object keys are built here by
the platform from ids and content hashes, never from user-supplied paths.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from django.conf import settings
from minio import Minio
from minio.commonconfig import ComposeSource
from minio.datatypes import Part
from minio.error import S3Error

BUCKETS = ("models", "datasets", "files", "artifacts")
PART_SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def model_blob_key(repo_id: int, sha256: str) -> str:
    """Content-addressed key of one model file: equal files share one object."""
    _check_hex(sha256)
    return f"repos/{int(repo_id)}/blobs/{sha256}"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a local file: the content address of its object."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def dataset_blob_key(repo_id: int, sha256: str) -> str:
    """Content-addressed key of one dataset file: equal files of a repo share one object."""
    _check_hex(sha256)
    return f"repos/{int(repo_id)}/blobs/{sha256}"


def dataset_staging_key(file_id: int) -> str:
    """Where an upload lands before it is hashed (a dataset file's database id)."""
    return f"staging/{int(file_id)}"


def dataset_parquet_key(version_id: int, file_id: int) -> str:
    """The viewer's columnar copy of one file of one version."""
    return f"viewer/{int(version_id)}/{int(file_id)}.parquet"


_TRAINING_JOB = re.compile(r"^ftjob-[A-Za-z0-9]{1,40}$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def training_key(job_id: str, part: str, path: str) -> str:
    """Where a fine-tune's object lives: ``training/<job id>/<part>/<path>`` with
    ``part`` ``checkpoints/<step>`` or ``result``. ``path`` is the runner's relative file
    name, checked segment by segment (no ``..``, no absolute path, no odd characters)."""
    if not _TRAINING_JOB.match(job_id):
        raise ValueError("expected a fine-tuning job id")
    if not all(_SAFE_SEGMENT.match(seg) for seg in part.split("/")):
        raise ValueError(f"bad key part {part!r}")
    if not safe_relative_path(path):
        raise ValueError(f"unsafe relative path {path!r}")
    return f"training/{job_id}/{part}/{path}"


def safe_relative_path(path: str, max_depth: int = 3) -> bool:
    """Whether ``path`` is a relative POSIX path of at most ``max_depth`` plain segments
    (letters, digits, ``_ . -``, not starting with a dot)."""
    segments = path.split("/")
    return 0 < len(segments) <= max_depth and all(
        _SAFE_SEGMENT.match(seg) and seg not in (".", "..") for seg in segments
    )


def _check_hex(value: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("expected a sha256 hex digest")


def _client(endpoint: str) -> Minio:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint must be an http(s) URL, got {endpoint!r}")
    return Minio(
        parts.netloc,
        access_key=settings.S3_ACCESS_KEY,
        secret_key=settings.S3_SECRET_KEY,
        secure=parts.scheme == "https",
        region=settings.S3_REGION,
    )


class ObjectStore:
    """Buckets ``<prefix>-<kind>`` for kinds in :data:`BUCKETS`."""

    def __init__(self) -> None:
        self.client = _client(settings.S3_ENDPOINT)
        # Presigned URLs are for nodes and browsers, which may reach the store elsewhere.
        public = settings.S3_PUBLIC_ENDPOINT or settings.S3_ENDPOINT
        self.public_client = _client(public)

    def bucket(self, kind: str) -> str:
        if kind not in BUCKETS:
            raise ValueError(f"unknown bucket kind {kind!r}")
        return f"{settings.S3_BUCKET_PREFIX}-{kind}"

    def ensure_buckets(self) -> None:
        for kind in BUCKETS:
            name = self.bucket(kind)
            if not self.client.bucket_exists(name):
                try:
                    self.client.make_bucket(name)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def put_file(self, kind: str, key: str, path: Path, content_type: str = "") -> None:
        """Upload a local file; large files go up in multipart parts."""
        self.client.fput_object(
            self.bucket(kind),
            key,
            str(path),
            content_type=content_type or "application/octet-stream",
            part_size=PART_SIZE,
        )

    def put_stream(
        self, kind: str, key: str, stream: BinaryIO, length: int = -1, part_size: int = PART_SIZE
    ) -> None:
        """Upload from a file object; an unknown ``length`` (-1) goes up in parts."""
        self.client.put_object(self.bucket(kind), key, stream, length, part_size=part_size)

    def put_bytes(self, kind: str, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket(kind), key, io.BytesIO(data), len(data))

    def get_bytes(self, kind: str, key: str) -> bytes:
        response = self.client.get_object(self.bucket(kind), key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def stream(self, kind: str, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        response = self.client.get_object(self.bucket(kind), key)
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def download(self, kind: str, key: str, dest: Path) -> None:
        self.client.fget_object(self.bucket(kind), key, str(dest))

    def exists(self, kind: str, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket(kind), key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise
        return True

    def delete(self, kind: str, key: str) -> None:
        self.client.remove_object(self.bucket(kind), key)

    def presigned_get(self, kind: str, key: str, expires_s: int = 3600) -> str:
        return self.public_client.presigned_get_object(
            self.bucket(kind), key, expires=timedelta(seconds=expires_s)
        )

    def presigned_put(self, kind: str, key: str, expires_s: int = 3600) -> str:
        return self.public_client.presigned_put_object(
            self.bucket(kind), key, expires=timedelta(seconds=expires_s)
        )

    def size(self, kind: str, key: str) -> int:
        return int(self.client.stat_object(self.bucket(kind), key).size or 0)

    def copy(self, kind: str, source: str, dest: str) -> None:
        """Server-side copy (multipart copy for objects over 5 GiB)."""
        bucket = self.bucket(kind)
        self.client.compose_object(bucket, dest, [ComposeSource(bucket, source)])

    # Multipart uploads whose parts a browser PUTs by presigned URL. The minio SDK keeps
    # these calls private (its own put_object drives them); they are the plain S3 API.
    def start_multipart(self, kind: str, key: str) -> str:
        return self.client._create_multipart_upload(self.bucket(kind), key, {})

    def presigned_part(
        self, kind: str, key: str, upload_id: str, part_number: int, expires_s: int = 3600
    ) -> str:
        return self.public_client.get_presigned_url(
            "PUT",
            self.bucket(kind),
            key,
            expires=timedelta(seconds=expires_s),
            extra_query_params={"uploadId": upload_id, "partNumber": str(part_number)},
        )

    def complete_multipart(self, kind: str, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [Part(number, etag) for number, etag in enumerate(etags, start=1)]
        self.client._complete_multipart_upload(self.bucket(kind), key, upload_id, parts)

    def abort_multipart(self, kind: str, key: str, upload_id: str) -> None:
        self.client._abort_multipart_upload(self.bucket(kind), key, upload_id)


@functools.cache
def store() -> ObjectStore:
    """The process-wide store client (settings are read once)."""
    return ObjectStore()
