"""OpenAI's ``/v1/files`` in Django, so the official SDK works unchanged: upload (multipart,
refused with 413 over ``FILES_MAX_BYTES`` before anything is stored), list, retrieve,
content and delete. Every error is in OpenAI's shape; another tenant's file is a 404.

The work is in :mod:`datasets.services.files`; these views check, call and shape.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.models import File, FilePurpose
from datasets.services import files
from portal.api.v1 import JSONOnly, KeyScope, list_limit, v1_exception_handler
from portal.api.v1 import error_responses as _errors
from portal.auth import acting_user
from portal.errors import NotFound, PlatformError

# Room for the multipart framing and the ``purpose`` field around the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024
MAX_LIST_LIMIT = 10_000


# --- request handling -----------------------------------------------------------------


class CappedUploadHandler(TemporaryFileUploadHandler):
    """Writes uploaded files to temporary files and stops the request with a 413 as soon
    as their bytes pass ``limit``, before the rest of the body is read or anything stored."""

    def __init__(self, request: HttpRequest | None, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()  # a temporary file: closing it removes it
            files.check_size(self.received, self.limit)
        return super().receive_data_chunk(raw_data, start)


class V1View(APIView):
    """Bearer key (or session) authentication, scopes, OpenAI-shaped JSON and errors."""

    permission_classes = [IsAuthenticated, KeyScope]
    scope = "files"
    renderer_classes = [JSONRenderer]
    parser_classes = [MultiPartParser]
    content_negotiation_class = JSONOnly

    def get_exception_handler(self) -> Any:
        return v1_exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before anything may read the body (a session's CSRF check reads the form).
        if request.method == "POST":
            request._request.upload_handlers = [
                CappedUploadHandler(request._request, settings.FILES_MAX_BYTES)
            ]
        super().initial(request, *args, **kwargs)


def file_object(file: File) -> dict[str, Any]:
    """OpenAI's ``file`` object."""
    status, details = files.file_status(file)
    return {
        "id": file.pk,
        "object": "file",
        "bytes": file.bytes,
        "created_at": int(file.created_at.timestamp()),
        "expires_at": None,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": status,
        "status_details": details,
    }


def _find(request: Request, file_id: str, action: str = "read") -> File:
    file = files.files_of(acting_user(request), action).filter(pk=file_id).first()
    if file is None:
        raise NotFound(f"No such File object: {file_id[:64]}", param="file_id")
    return file


# --- schema ---------------------------------------------------------------------------


class FileObjectSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField()
    object = serializers.CharField(help_text="Always 'file'.")
    bytes = serializers.IntegerField()
    created_at = serializers.IntegerField(help_text="Unix seconds")
    expires_at = serializers.IntegerField(allow_null=True)
    filename = serializers.CharField()
    purpose = serializers.ChoiceField(choices=FilePurpose.values)
    status = serializers.ChoiceField(choices=[files.UPLOADED, files.PROCESSED, files.ERROR])
    status_details = serializers.CharField(allow_null=True)


FILE_LIST = inline_serializer(
    "FileList",
    {
        "object": serializers.CharField(help_text="Always 'list'."),
        "data": FileObjectSerializer(many=True),
        "first_id": serializers.CharField(allow_null=True),
        "last_id": serializers.CharField(allow_null=True),
        "has_more": serializers.BooleanField(),
    },
)


class FileUploadSerializer(serializers.Serializer):  # type: ignore[type-arg]
    file = serializers.FileField(help_text="The file's bytes (JSON Lines for fine-tune).")
    purpose = serializers.ChoiceField(choices=files.PURPOSES)


class FileDeletedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField()
    object = serializers.CharField(help_text="Always 'file'.")
    deleted = serializers.BooleanField()


LIST_PARAMETERS = [
    OpenApiParameter("purpose", str, description="Only files with this purpose."),
    OpenApiParameter("limit", int, description="1 to 10,000 (the default)."),
    OpenApiParameter("after", str, description="A file id: list the files after it."),
    OpenApiParameter("order", str, enum=["asc", "desc"], description="By created_at."),
]
FILE_ID = OpenApiParameter("file_id", str, OpenApiParameter.PATH)


# --- views ----------------------------------------------------------------------------


class FilesView(V1View):
    """Your files: list and upload."""

    @extend_schema(
        operation_id="listFiles",
        tags=["files"],
        parameters=LIST_PARAMETERS,
        responses={200: FILE_LIST, **_errors(400, 401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        """Your files, newest first; page with ``after`` and ``limit``."""
        query = request.query_params
        page = files.list_files(
            acting_user(request),
            purpose=query.get("purpose"),
            limit=_limit(query.get("limit")),
            after=query.get("after") or None,
            order=_order(query.get("order")),
        )
        data = [file_object(file) for file in page.files]
        return Response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": page.has_more,
            }
        )

    @extend_schema(
        operation_id="createFile",
        tags=["files"],
        request={"multipart/form-data": FileUploadSerializer},
        responses={
            200: FileObjectSerializer,
            **_errors(400, 401, 403, 404, 409, 411, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        """Upload a file; it becomes a private dataset and is validated for its purpose."""
        _check_length(request)
        upload = request.FILES.get("file")
        purpose = request.POST.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise PlatformError("Missing 'purpose'.", code="missing_purpose", param="purpose")
        files.check_purpose(purpose)
        if not isinstance(upload, UploadedFile) or not upload.name:
            raise PlatformError("Missing 'file' (a multipart file).", param="file")
        with _local_path(upload) as path:
            file = files.create_file(acting_user(request), path, upload.name, purpose)
        return Response(file_object(file))


class FileView(V1View):
    """One of your files."""

    @extend_schema(
        operation_id="retrieveFile",
        tags=["files"],
        parameters=[FILE_ID],
        responses={200: FileObjectSerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request, file_id: str) -> Response:
        """The file and its status (``error`` with the first problems when invalid)."""
        return Response(file_object(_find(request, file_id)))

    @extend_schema(
        operation_id="deleteFile",
        tags=["files"],
        parameters=[FILE_ID],
        responses={200: FileDeletedSerializer, **_errors(400, 401, 403, 404, 409, 429)},
    )
    def delete(self, request: Request, file_id: str) -> Response:
        """Delete the file and its dataset; 409 ``file_in_use`` while a job reads it."""
        file = _find(request, file_id, "write")
        files.delete_file(file)
        return Response({"id": file_id, "object": "file", "deleted": True})


class FileContentView(V1View):
    """A file's bytes."""

    @extend_schema(
        operation_id="downloadFile",
        tags=["files"],
        parameters=[FILE_ID],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **_errors(400, 401, 403, 404, 429),
        },
    )
    def get(self, request: Request, file_id: str) -> StreamingHttpResponse:
        """The file's bytes, exactly as uploaded."""
        file = _find(request, file_id)
        response = StreamingHttpResponse(
            _async_chunks(files.content_of(file)), content_type="application/octet-stream"
        )
        response["Content-Length"] = str(file.bytes)
        disposition = content_disposition_header(as_attachment=True, filename=file.filename)
        response["Content-Disposition"] = disposition or "attachment"
        return response


# --- helpers --------------------------------------------------------------------------


def _limit(raw: str | None) -> int:
    return list_limit(raw, MAX_LIST_LIMIT, MAX_LIST_LIMIT)


def _order(raw: str | None) -> str:
    if raw in (None, "", "asc", "desc"):
        return raw or "desc"
    raise PlatformError("'order' must be 'asc' or 'desc'.", param="order")


def _check_length(request: Request) -> None:
    """Refuse by ``Content-Length`` before reading the body; without one, Django would
    not read a multipart body at all."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw.isdigit():
        raise PlatformError(
            "An upload needs a Content-Length header.", code="length_required", status=411
        )
    if int(raw) > settings.FILES_MAX_BYTES + MULTIPART_SLACK_BYTES:
        files.check_size(int(raw) - MULTIPART_SLACK_BYTES)


@contextmanager
def _local_path(upload: UploadedFile) -> Iterator[Path]:
    """The upload's path on disk (a temporary copy when it was kept in memory)."""
    path = getattr(upload, "temporary_file_path", None)
    if path is not None:
        yield Path(path())
        return
    with tempfile.NamedTemporaryFile(prefix="openmaas-file-") as copy:
        for chunk in upload.chunks():
            copy.write(chunk)
        copy.flush()
        yield Path(copy.name)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Serve a blocking stream under ASGI chunk by chunk (a synchronous iterator would
    be read whole into memory first), closing it however the response ends."""
    step = sync_to_async(_next_chunk, thread_sensitive=False)
    try:
        while (chunk := await step(chunks)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=False)()
