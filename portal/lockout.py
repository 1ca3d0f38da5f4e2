"""What a locked-out login gets (django-axes' ``AXES_LOCKOUT_CALLABLE``): 429 with
``Retry-After``, in DRF's error shape under ``/api/`` and as a page on the web."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from portal.errors import PlatformError


def cooloff_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def locked_out_error() -> PlatformError:
    seconds = cooloff_seconds()
    return PlatformError(
        f"Too many failed login attempts; try again in {seconds} seconds.",
        code="login_locked",
        status=429,
        headers={"Retry-After": str(seconds)},
    )


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Called by axes' middleware (sync or async, with or without the original response
    and credentials, which are not needed here)."""
    error = locked_out_error()
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": error.message, "code": error.code}, status=429)
    else:
        context = {"minutes": max(1, cooloff_seconds() // 60)}
        response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = error.headers["Retry-After"]
    return response
