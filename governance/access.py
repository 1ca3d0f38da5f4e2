"""Who may open the governance pages: staff (every row) and the owners and admins of an
organisation (their organisations' rows). Everyone else gets the portal's 404 — the
section does not exist to them, as a private resource does not.

Row-level tenancy lives elsewhere: :mod:`governance.services.scope` for the queue, the
audit log and suspensions, ``restrict()`` for owned rows (:func:`owned` adds the
platform's rows for staff, which ``restrict`` shows superusers only).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from portal.models import Organization
from portal.models.accounts import Membership, Role
from portal.views import not_found

M = TypeVar("M")
View = Callable[..., HttpResponse]


def is_staff(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))


def managed_orgs(user: Any) -> QuerySet[Organization]:
    """The organisations ``user`` owns or administers."""
    return Organization.objects.filter(
        memberships__user=user, memberships__role__in=Role.managers()
    ).distinct()


def can_govern(user: Any) -> bool:
    """Staff, or the owner or an admin of at least one organisation."""
    if not getattr(user, "is_authenticated", False):
        return False
    if is_staff(user):
        return True
    return Membership.objects.filter(user=user, role__in=Role.managers()).exists()


def owned(model: Any, user: Any) -> Any:
    """The rows of an ``OwnedModel`` that ``user`` governs: all for staff (platform rows
    included), else those of the user and of the organisations they manage."""
    if is_staff(user):
        return model.objects.all()
    return model.objects.restrict(user, "write")


def governor_required(view: View) -> View:
    """Sign-in required; a signed-in user who governs nothing gets the 404 page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_govern(request.user):
            return not_found(request)
        return view(request, *args, **kwargs)

    return login_required(wrapped)
