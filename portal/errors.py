"""One error type for the platform, mapped once to each API's shape.

Services raise :class:`PlatformError` (or a subclass) with a machine-readable ``code``;
``/v1`` renders it in OpenAI's shape ``{"error": {message, type, param, code}}`` and
``/api`` in DRF's shape ``{"detail": ..., "code": ...}``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

logger = logging.getLogger(__name__)


class PlatformError(Exception):
    """An expected failure with an HTTP status and a stable ``code``."""

    status = 400
    code = "invalid_request"
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.param = param
        self.error_type = error_type or self.error_type
        self.headers = headers or {}


class NotFound(PlatformError):
    status = 404
    code = "not_found"


class PermissionDenied(PlatformError):
    status = 403
    code = "permission_denied"


class AuthenticationFailed(PlatformError):
    status = 401
    code = "invalid_api_key"
    error_type = "authentication_error"


class Conflict(PlatformError):
    status = 409
    code = "conflict"


class Unavailable(PlatformError):
    status = 503
    code = "service_unavailable"
    error_type = "server_error"


def openai_error_body(
    message: str, *, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def openai_error_response(exc: PlatformError) -> JsonResponse:
    body = openai_error_body(exc.message, error_type=exc.error_type, code=exc.code, param=exc.param)
    response = JsonResponse(body, status=exc.status, json_dumps_params={"ensure_ascii": False})
    for name, value in exc.headers.items():
        response[name] = value
    return response


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, extended with :class:`PlatformError` and Django's own errors."""
    if isinstance(exc, PlatformError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
        if exc.param:
            body["param"] = exc.param
        return Response(body, status=exc.status, headers=exc.headers)
    if isinstance(exc, drf_exceptions.ParseError):
        return Response(
            {"detail": f"Malformed request body: {exc.detail}", "code": "parse_error"}, status=400
        )
    from django.core.exceptions import RequestDataTooBig

    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body is too large.", "code": "request_too_large"}, status=413
        )
    return drf_default_handler(exc, context)
