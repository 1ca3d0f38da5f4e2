"""What every Django view under ``/v1`` shares (``/v1/files``, ``/v1/fine_tuning``):
OpenAI's error shape for every failure, bearer-key scopes, JSON whatever ``Accept`` says,
and the schema pieces that document those errors.

The gateway serves inference under ``/v1``; these are the Django-served OpenAI APIs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from portal.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PlatformError,
    openai_error_body,
)
from portal.models import APIKey
from portal.models.keys import scope_allows


def as_platform_error(exc: Exception) -> PlatformError | None:
    """The platform error a view's exception stands for; None for a crash (a 500)."""
    if isinstance(exc, PlatformError):
        return exc
    if isinstance(exc, exceptions.NotAuthenticated):
        return AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-…'.",
            code="missing_api_key",
        )
    if isinstance(exc, exceptions.AuthenticationFailed):
        return AuthenticationFailed(str(exc.detail))
    if isinstance(exc, exceptions.PermissionDenied):
        return PermissionDenied(str(exc.detail))
    if isinstance(exc, Http404 | exceptions.NotFound):
        return NotFound("Not found.")
    if isinstance(exc, RequestDataTooBig):
        return PlatformError("Request body is too large.", code="request_too_large", status=413)
    if isinstance(exc, SuspiciousOperation):
        return PlatformError(str(exc) or "Malformed request.", code="invalid_request")
    if isinstance(exc, exceptions.ValidationError):
        return _validation_error(exc)
    if isinstance(exc, exceptions.APIException):
        code = str(getattr(exc, "default_code", "") or "invalid_request")
        return PlatformError(str(exc.detail), code=code, status=exc.status_code)
    return None


def _validation_error(exc: exceptions.ValidationError) -> PlatformError:
    detail = exc.detail
    if isinstance(detail, dict) and detail:
        field, messages = next(iter(detail.items()))
        text = messages[0] if isinstance(messages, list) and messages else messages
        return PlatformError(f"{field}: {text}", param=str(field))
    return PlatformError(str(detail))


def v1_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler for ``/v1`` views: OpenAI's error shape, right status."""
    error = as_platform_error(exc)
    if error is None:
        return None
    body = openai_error_body(
        error.message, error_type=error.error_type, code=error.code, param=error.param
    )
    headers = dict(error.headers)
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="openmaas"')
    return Response(body, status=error.status, headers=headers)


class ErrorDetailSerializer(serializers.Serializer):  # type: ignore[type-arg]
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class OpenAIErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """OpenAI's error shape."""

    error = ErrorDetailSerializer()


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """Schema entries documenting OpenAI-shaped errors with ``statuses``."""
    return {
        status: OpenApiResponse(OpenAIErrorSerializer, description=f"Error ({status})")
        for status in statuses
    }


class KeyScope(BasePermission):
    """A key needs ``<view.scope>:read`` to read and ``<view.scope>`` to write; a browser
    session needs none."""

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, APIKey):
            return True
        scope = str(getattr(view, "scope", ""))
        needed = f"{scope}:read" if request.method in SAFE_METHODS else scope
        if not scope_allows(key.scopes, needed):
            raise PermissionDenied(
                f"This API key lacks the '{needed}' scope.", code="insufficient_scope"
            )
        return True


class JSONOnly(DefaultContentNegotiation):
    """``/v1`` answers JSON whatever the ``Accept`` header or ``?format=`` says."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


def list_limit(raw: str | None, maximum: int, default: int) -> int:
    """A ``limit`` query parameter: ``default`` when absent; 400 unless 1..``maximum``."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise PlatformError(f"'limit' must be an integer from 1 to {maximum}.", param="limit")
    return value
