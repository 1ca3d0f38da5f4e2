"""Who may open the governance pages: staff (every row) and the owners and admins of an
organisation (their organisations' rows). Everyone else gets the portal's 404 — the
section does not exist to them, as a private resource does not.

Row-level tenancy lives elsewhere: :mod:`governance.services.scope` for the queue, the
audit log and suspensions, ``visible_policies`` / ``visible_lists`` of the policies and
lists services, and :func:`owned` for compliance reports (``restrict(user, "write")``,
all rows for staff).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from governance.services import scope
from portal.models import Organization
from portal.models.accounts import Role
from portal.views import not_found

View = Callable[..., HttpResponse]


def managed_orgs(user: Any) -> QuerySet[Organization]:
    """The organisations ``user`` owns or administers."""
    return Organization.objects.filter(
        memberships__user=user, memberships__role__in=Role.managers()
    ).distinct()


def can_govern(user: Any) -> bool:
    """Staff, or the owner or an admin of at least one organisation."""
    return scope.is_reviewer(user)


def owned(model: Any, user: Any) -> Any:
    """The rows of an ``OwnedModel`` that ``user`` governs: all for staff (platform rows
    included), else those of the user and of the organisations they manage."""
    if scope.is_staff(user):
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
