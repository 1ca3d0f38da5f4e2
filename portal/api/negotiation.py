"""Content negotiation: an unknown ``?format=`` is a 400 that names the formats, not
DRF's bare 404 (the path exists; only the parameter is wrong)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class FormatNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, Any]:
        renderers = list(renderers)
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except Http404:
            formats = sorted({str(r.format) for r in renderers})
            raise exceptions.ValidationError(
                {"format": [f"Unknown format; use one of: {', '.join(formats)}."]}
            ) from None
