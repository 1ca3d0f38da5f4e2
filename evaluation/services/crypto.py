"""Secrets kept at rest (endpoint keys, a run's gateway key), encrypted with Fernet.

The Fernet key is derived from ``EVAL_ENCRYPTION_KEY`` (or ``SECRET_KEY`` when unset) by
SHA-256, so any string of the operator's works and rotating it makes old ciphertexts
unreadable (:func:`decrypt` then raises a clear error, never returns garbage).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from portal.errors import PlatformError


def _fernet() -> Fernet:
    secret = settings.EVAL_ENCRYPTION_KEY or settings.SECRET_KEY
    digest = hashlib.sha256(b"openmaas-evaluation:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plain: str) -> str:
    """The Fernet token of ``plain`` (an empty string stays empty)."""
    if not plain:
        return ""
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """The plain text of a token from :func:`encrypt`. Raises PlatformError
    (``secret_unreadable``) when the encryption key changed since it was stored."""
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise PlatformError(
            "A stored secret cannot be decrypted (was EVAL_ENCRYPTION_KEY changed?); "
            "enter the key again.",
            code="secret_unreadable",
        ) from exc


def hint(plain: str) -> str:
    """The last four characters of a key, for people to recognise it."""
    return plain[-4:] if len(plain) >= 8 else ""
