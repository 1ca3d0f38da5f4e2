"""Downloads in the governance API: ``?format=`` picks the file type through DRF's content
negotiation (these renderers name the formats), the view writes the file itself (an
``HttpResponse`` or a stream), and errors are answered in DRF's JSON shape whatever
format was asked for (:class:`JSONErrors`)."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView


class FileRenderer(BaseRenderer):
    """Selects a file format in content negotiation. The file is the view's own response,
    so this renders only what might still reach it, as JSON."""

    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return json.dumps(data, ensure_ascii=False).encode()


class TextRenderer(FileRenderer):
    media_type = "text/plain"
    format = "txt"


class CSVRenderer(FileRenderer):
    media_type = "text/csv"
    format = "csv"


class JSONLinesRenderer(FileRenderer):
    media_type = "application/x-ndjson"
    format = "jsonl"


class JSONErrors(APIView):
    """Put before the view's base class: errors in JSON even when a file was asked for."""

    def handle_exception(self, exc: Exception) -> Response:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
