"""External OpenAI-compatible endpoints: an application or another provider evaluated
like a pool model. The key is stored Fernet-encrypted and never shown again; the API
shows its last characters (``key_hint``) only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.db.models import QuerySet

from evaluation.models import Endpoint
from evaluation.services import crypto
from evaluation.services.catalog import save_new
from portal.errors import Conflict, NotFound, PermissionDenied, PlatformError
from portal.models import Visibility

MAX_KEY_CHARS = 500


def check_base_url(base_url: Any) -> str:
    """An ``http(s)://host[:port]/path`` URL without credentials, query or fragment,
    trailing slash removed; 400 (``param`` base_url) otherwise."""
    text = base_url.strip() if isinstance(base_url, str) else ""
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or len(text) > 500
    ):
        raise PlatformError(
            "base_url must be an http(s) URL such as https://api.example.com/v1 "
            "(no credentials, query or fragment).",
            param="base_url",
        )
    return text.rstrip("/")


def _check_name(value: Any, param: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        raise PlatformError(f"'{param}' must be 1 to {limit} characters.", param=param)
    return value.strip()


def create_endpoint(
    user: Any,
    owner: Any,
    name: str,
    base_url: str,
    model: str,
    api_key: str = "",
    visibility: str = Visibility.PRIVATE,
) -> Endpoint:
    """A new endpoint ``owner/name``; the key is encrypted before it is stored.

    Raises a 400 for a bad field, PermissionDenied (403) for an owner ``user`` may not
    write, Conflict (409) for a taken name."""
    if len(api_key or "") > MAX_KEY_CHARS:
        raise PlatformError(f"api_key is over {MAX_KEY_CHARS} characters.", param="api_key")
    if visibility == Visibility.PUBLIC:
        raise PlatformError("An endpoint holds a key: it cannot be public.", param="visibility")
    endpoint = Endpoint(
        name=_check_name(name, "name", 96),
        base_url=check_base_url(base_url),
        model=_check_name(model, "model", 200),
        api_key_encrypted=crypto.encrypt(api_key or ""),
        key_hint=crypto.hint(api_key or ""),
        created_by=user,
    )
    return save_new(endpoint, user, owner, visibility)


def update_endpoint(user: Any, endpoint: Endpoint, **changes: Any) -> Endpoint:
    """Change ``base_url``, ``model`` or ``api_key`` (re-encrypted) of an endpoint."""
    _check_writable(user, endpoint)
    if "base_url" in changes:
        endpoint.base_url = check_base_url(changes["base_url"])
    if "model" in changes:
        endpoint.model = _check_name(changes["model"], "model", 200)
    if "api_key" in changes:
        key = str(changes["api_key"] or "")
        if len(key) > MAX_KEY_CHARS:
            raise PlatformError(f"api_key is over {MAX_KEY_CHARS} characters.", param="api_key")
        endpoint.api_key_encrypted = crypto.encrypt(key)
        endpoint.key_hint = crypto.hint(key)
    endpoint.save()
    return endpoint


def _check_writable(user: Any, endpoint: Endpoint) -> None:
    if not Endpoint.objects.restrict(user, "write").filter(pk=endpoint.pk).exists():
        raise PermissionDenied(f"You may use {endpoint} but not change it.")


def delete_endpoint(user: Any, endpoint: Endpoint) -> None:
    """Delete an endpoint no run used (409 otherwise: the runs' records name it)."""
    _check_writable(user, endpoint)
    if endpoint.runs.exists():
        raise Conflict(f"{endpoint} is used by runs.", code="endpoint_in_use")
    endpoint.delete()


def endpoints_of(user: Any) -> QuerySet[Endpoint]:
    return Endpoint.objects.restrict(user, "read")


def resolve_endpoint(user: Any, ref: Any, param: str = "endpoint") -> Endpoint:
    """The endpoint ``namespace/name`` (or an Endpoint) ``user`` may use; 404 otherwise."""
    if isinstance(ref, Endpoint):
        found = endpoints_of(user).filter(pk=ref.pk).first()
    else:
        namespace, _, name = str(ref).strip().partition("/")
        found = endpoints_of(user).filter(namespace=namespace, name=name).first()
    if found is None:
        raise NotFound(f"No such endpoint: {str(ref)[:100]}", param=param)
    return found


def api_key_of(endpoint: Endpoint) -> str:
    """The endpoint's key in clear, for the worker's client only."""
    return crypto.decrypt(endpoint.api_key_encrypted)
