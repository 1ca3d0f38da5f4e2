"""Small files posted through the API: refused with 413 as soon as the request (or one of
its files) is known to be over ``DATASET_MAX_FILE_BYTES``, before anything is stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from datasets.services.versions import DatasetError, LocalFile

# Multipart framing (boundaries, headers, the message field) on top of the files' bytes.
FORM_OVERHEAD_BYTES = 64 * 1024


def too_large(size: int, limit: int) -> DatasetError:
    return DatasetError(
        f"A file of {size} bytes or more is over the limit of {limit} bytes; "
        "use POST …/uploads/ for large files.",
        code="file_too_large",
        param="files",
        status=413,
    )


class SizeLimitHandler(FileUploadHandler):
    """Stops reading the body once one file passes the limit (the parser streams)."""

    def __init__(self, request: HttpRequest | None = None, limit: int = 0) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise too_large(self.received, self.limit)
        return raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        return None


def guard_request(request: HttpRequest) -> None:
    """Refuse a body that cannot fit, and watch each file while the body is parsed."""
    limit = settings.DATASET_MAX_FILE_BYTES
    most = limit * settings.DATASET_MAX_FILES_PER_VERSION + FORM_OVERHEAD_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > most:
        raise too_large(length, limit)
    request.upload_handlers.insert(0, SizeLimitHandler(request, limit))


@contextmanager
def local_copies(files: list[UploadedFile]) -> Iterator[list[LocalFile]]:
    """The uploaded files on local disk under their own names, for ``add_local_files``."""
    with TemporaryDirectory(prefix="openmaas-api-upload-") as tmp:
        local = []
        for index, upload in enumerate(files):
            path = Path(tmp) / str(index)
            with path.open("wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            local.append(LocalFile(name=str(upload.name or ""), path=path))
        yield local
