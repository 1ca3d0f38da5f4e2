"""A signed-in browser's Django session as a ``/v1`` credential (the playground).

Only ``/v1/chat/completions`` and ``/v1/models`` accept it, and only from a request
that proves it comes from the portal's own pages: an ``X-CSRFToken`` header matching
the ``csrftoken`` cookie (the double-submit check of Django's CSRF protection) and an
``Origin`` — or, where a browser sends none, a ``Referer`` — naming the host the
request was sent to (or one of ``CSRF_TRUSTED_ORIGINS``). A cross-site page can make a
browser send the cookies but can neither read the token nor forge those headers.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpRequest
from django.middleware.csrf import CSRF_ALLOWED_CHARS, CSRF_SECRET_LENGTH
from django.utils.crypto import constant_time_compare

from portal.errors import AuthenticationFailed, PermissionDenied
from portal.services import keys
from portal.services.keys import KeyGrant

SESSION_PATHS = frozenset({"/v1/chat/completions", "/v1/models"})
CSRF_HEADER = "HTTP_X_CSRFTOKEN"
# Session look-ups get threads of their own: never the one the route refresh uses.
_executor: ThreadPoolExecutor | None = None


class CsrfFailed(PermissionDenied):
    code = "csrf_failed"


async def session_grant(scope: dict[str, Any]) -> KeyGrant | None:
    """The grant of the signed-in user whose session cookie this request carries.

    None when the path does not take sessions or no session cookie was sent (the
    caller then asks for an API key). Raises :class:`CsrfFailed` (403) when the
    request does not prove it comes from the portal's own pages, and
    ``AuthenticationFailed`` (401) when the session is not a signed-in one.
    """
    if scope["path"] not in SESSION_PATHS:
        return None
    request = ASGIRequest(scope, io.BytesIO())
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    check_same_origin(request)
    client = scope["client"][0] if scope.get("client") else "unknown"
    await keys.check_auth_failures(client)
    grant = await _in_thread(session_key)
    if grant is None:
        # Made-up session ids cost a database look-up each: they count as failures.
        await keys.note_auth_failure(client)
        raise AuthenticationFailed("Your session has ended; sign in again.", code="session_expired")
    return grant


async def _in_thread(session_key: str) -> KeyGrant | None:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(2, "openmaas-session")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, grant_for_session, session_key)


def check_same_origin(request: HttpRequest) -> None:
    """Refuse (403) a request without a matching CSRF token and same-origin header."""
    cookie = request.COOKIES.get(settings.CSRF_COOKIE_NAME, "")
    header = request.META.get(CSRF_HEADER, "")
    if not (cookie and header and tokens_match(header, cookie)):
        raise CsrfFailed("A browser session needs the X-CSRFToken header of the portal's pages.")
    try:
        expected = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost as exc:
        raise CsrfFailed("The request's host is not one this portal serves.") from exc
    if _origin_of(request) not in {expected, *settings.CSRF_TRUSTED_ORIGINS}:
        raise CsrfFailed("A browser session is accepted only from the portal's own pages.")


def _origin_of(request: HttpRequest) -> str | None:
    origin = request.META.get("HTTP_ORIGIN")
    if origin:
        return str(origin)
    referer = urlsplit(request.META.get("HTTP_REFERER", ""))
    return f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else None


def tokens_match(presented: str, cookie: str) -> bool:
    """Django's CSRF comparison: either value may be the secret or a masked token."""
    secret, token = _unmask(cookie), _unmask(presented)
    return bool(secret and token) and constant_time_compare(secret or "", token or "")


def _unmask(token: str) -> str | None:
    if len(token) == CSRF_SECRET_LENGTH:
        return token if set(token) <= set(CSRF_ALLOWED_CHARS) else None
    if len(token) != 2 * CSRF_SECRET_LENGTH or not set(token) <= set(CSRF_ALLOWED_CHARS):
        return None
    mask, cipher = token[:CSRF_SECRET_LENGTH], token[CSRF_SECRET_LENGTH:]
    chars = CSRF_ALLOWED_CHARS
    pairs = zip(cipher, mask, strict=True)
    return "".join(chars[chars.index(c) - chars.index(m)] for c, m in pairs)


def grant_for_session(session_key: str) -> KeyGrant | None:
    """The signed-in, active user of a session as a key-less grant; None otherwise.

    Its rate buckets are the user's (see :func:`portal.services.keys.session_grant`).
    Runs in a worker thread, outside any request: it manages its connection.
    """
    close_old_connections()
    try:
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_user(request)
        if not (user.is_authenticated and user.is_active):
            return None
        return keys.session_grant(user)
    finally:
        close_old_connections()
