"""Portal pages (the web UI grows in later issues) and JSON error handlers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST

from portal.auth import acting_user
from portal.errors import NotFound
from portal.forms import APIKeyForm, SignUpForm
from portal.hooks import is_served
from portal.models import APIKey, ModelRepo
from portal.services import keys


def home(request: HttpRequest) -> HttpResponse:
    models = ModelRepo.objects.restrict(request.user).order_by("-updated_at")[:20]
    return render(request, "portal/home.html", {"models": models})


def model_detail(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """A model's page: card, versions and files, how to call it. Hidden models are 404."""
    repo = ModelRepo.objects.restrict(request.user).filter(namespace=namespace, name=name).first()
    if repo is None:
        return not_found(request)
    versions = repo.versions.prefetch_related("files")
    return render(
        request,
        "portal/model_detail.html",
        {"repo": repo, "versions": versions, "served": is_served(repo.full_name)},
    )


def sign_up(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        if user is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("api-keys-page")
    return render(request, "portal/signup.html", {"form": form})


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    """List your keys and create one; a new key is shown once, on this response only."""
    form = APIKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data.get("expires_in_days")
        expires = timezone.now() + timedelta(days=days) if days else None
        _key, created = keys.create_api_key(request.user, form.cleaned_data["name"], expires)
        form = APIKeyForm()
    listing = APIKey.objects.filter(user=acting_user(request))
    return render(
        request, "portal/api_keys.html", {"form": form, "keys": listing, "created": created}
    )


@login_required
@require_POST
def revoke_api_key(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        keys.revoke_api_key(request.user, key_id)
    except NotFound:
        return not_found(request)
    messages.success(request, _("密钥已吊销。"))
    return redirect("api-keys-page")


@login_required
@ensure_csrf_cookie
def playground(request: HttpRequest) -> HttpResponse:
    """Chat with any model the user may use; the page's script calls ``/v1`` with the
    browser session (see ``portal.gateway.session``), so no API key is involved."""
    return render(request, "portal/playground.html", {"model": request.GET.get("model", "")})


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
