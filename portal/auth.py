"""Authentication of ``/api``: ``Authorization: Bearer sk-…`` API keys (and sessions)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def acting_user(request: HttpRequest | Request) -> User:
    """The signed-in user of a view that requires one (DRF or Django checked it)."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user


class APIKeyAuthentication(authentication.BaseAuthentication):
    """Accepts user API keys; a wrong, expired or revoked key is a 401, not anonymous."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        from portal.models.keys import KEY_PREFIX
        from portal.services.keys import lookup_key, touch_key

        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None or not token.startswith(KEY_PREFIX):
            return None
        key = lookup_key(token)
        if key is None or not key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        touch_key(key)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="openmaas"'
