"""THE tenancy filter for governance rows that are not ``OwnedModel``: review items,
moderation decisions, audit events and suspensions (and appeals, through their item).

Each of these rows names at most one organisation (``owner_org`` or ``org``). Staff
(``is_staff`` or superuser) see every row; an organisation's owners and admins
(:meth:`portal.models.Role.managers`) see their organisations' rows; everyone else sees
none. Rows with no organisation are the platform's: staff only. A user affected by a
decision sees their own review items through :func:`my_items` only (to appeal), never
the queue. Views look rows up through these querysets, so another tenant's id is a 404.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import Model, Q, QuerySet

from governance.models import Appeal, AuditEvent, ModerationDecision, ReviewItem, Suspension
from portal.models import Membership, Role

_M = TypeVar("_M", bound=Model)


def is_staff(user: Any) -> bool:
    """Whether ``user`` is platform staff (sees every governance row)."""
    active = bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))
    return active and bool(user.is_staff or user.is_superuser)


def managed_org_ids(user: Any) -> QuerySet[Any]:
    """The ids of the organisations ``user`` owns or administers (a subquery)."""
    return Membership.objects.filter(user_id=user.pk, role__in=Role.managers()).values(
        "organization_id"
    )


def is_reviewer(user: Any) -> bool:
    """Whether ``user`` may see any governance rows at all (staff or an org manager)."""
    if not getattr(user, "is_authenticated", False):
        return False
    return is_staff(user) or managed_org_ids(user).exists()


def _scoped(rows: QuerySet[_M], user: Any, org_field: str) -> QuerySet[_M]:
    if is_staff(user):
        return rows
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return rows.none()
    return rows.filter(Q(**{f"{org_field}__in": managed_org_ids(user)}))


def visible_items(user: Any) -> QuerySet[ReviewItem]:
    """Review items ``user`` may review: staff all, org managers their orgs'."""
    return _scoped(ReviewItem.objects.all(), user, "owner_org_id")


def visible_decisions(user: Any) -> QuerySet[ModerationDecision]:
    """Moderation decisions ``user`` may read (by the organisation of the traffic)."""
    return _scoped(ModerationDecision.objects.all(), user, "org_id")


def visible_audit(user: Any) -> QuerySet[AuditEvent]:
    """Audit events ``user`` may read: staff all, org managers their orgs' entries."""
    return _scoped(AuditEvent.objects.all(), user, "org_id")


def visible_suspensions(user: Any) -> QuerySet[Suspension]:
    """Suspensions ``user`` may read (and lift): staff all, org managers their orgs'."""
    return _scoped(Suspension.objects.all(), user, "org_id")


def visible_appeals(user: Any) -> QuerySet[Appeal]:
    """Appeals ``user`` may decide: those on review items they may review."""
    return _scoped(Appeal.objects.all(), user, "item__owner_org_id")


def my_items(user: Any) -> QuerySet[ReviewItem]:
    """The review items about ``user``'s own requests or reports (to follow and appeal)."""
    if not getattr(user, "is_authenticated", False):
        return ReviewItem.objects.none()
    return ReviewItem.objects.filter(subject_user_id=user.pk)


def can_review(user: Any, item: ReviewItem) -> bool:
    """Whether ``user`` may assign and decide ``item``."""
    return visible_items(user).filter(pk=item.pk).exists()
