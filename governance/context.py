"""The governance template context of every page: whether the nav shows the governance
entry. The hub's base template reads a variable instead of loading this sub-platform's
template tags."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from governance import access


def governance_nav(request: HttpRequest) -> dict[str, Any]:
    """``can_govern``: staff or an organisation's owner or admin (``access.can_govern``).
    Lazy: the membership query runs only when a template reads it, and never for an
    anonymous visitor."""

    def can_govern() -> bool:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return False
        return access.can_govern(user)

    return {"can_govern": SimpleLazyObject(can_govern)}
