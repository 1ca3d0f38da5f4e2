"""Public ids of platform objects: a type prefix and 24 random letters and digits
(``ftjob-…``, ``evalrun-…``, ``review-…``), like OpenAI's ids: unguessable, and what
the API shows instead of the row's primary key."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def public_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))
