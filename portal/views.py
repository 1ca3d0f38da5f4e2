"""Portal pages (the web UI grows in later issues) and JSON error handlers."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from portal.models import ModelRepo


def home(request: HttpRequest) -> HttpResponse:
    models = ModelRepo.objects.restrict(request.user).order_by("-updated_at")[:20]
    return render(request, "portal/home.html", {"models": models})


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Any = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return render(request, "portal/error.html", {"status": 404}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)
    return render(request, "portal/error.html", {"status": 500}, status=500)
