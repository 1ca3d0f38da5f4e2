"""Users throttled or suspended for repeated violations.

The gateway counts a user's blocked inputs in Redis; when a policy's ``offenders``
thresholds are crossed the event worker calls :func:`apply` (throttled, then suspended),
and staff or the organisation's managers may apply or :func:`lift` one by hand. A
suspension is active until ``until`` passes or it is lifted. Every change is an audit
event and moves the gateway's snapshot counter after commit.

Tenancy (who sees which rows) is ``governance.services.scope.visible_suspensions``
(the review queue's module, one filter for all non-owned governance rows);
:func:`visible` defers to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from governance.models import Suspension, SuspensionLevel
from governance.services import audit, scope
from governance.services.policies import bump_on_commit
from governance.services.scope import is_staff
from portal.errors import Conflict, PermissionDenied, PlatformError
from portal.models import Membership, Role

SEVERITY: dict[str, int] = {SuspensionLevel.THROTTLED: 1, SuspensionLevel.SUSPENDED: 2}
MAX_REASON = 2000


def visible(user: Any) -> QuerySet[Suspension]:
    """The suspensions ``user`` may see and lift: staff all, an organisation's owners and
    admins those of the organisation, everyone else none."""
    return scope.visible_suspensions(user)


def active_q(now: datetime | None = None) -> Q:
    """Rows in force at ``now``: not lifted and not expired."""
    now = now or timezone.now()
    return Q(lifted_at__isnull=True) & (Q(until__isnull=True) | Q(until__gt=now))


def is_active(row: Suspension, now: datetime | None = None) -> bool:
    """:func:`active_q` for one row."""
    return row.lifted_at is None and (row.until is None or row.until > (now or timezone.now()))


def active_for(user_id: int) -> Suspension | None:
    """The user's most severe suspension in force (the newest of that level), or None."""
    rows = list(Suspension.objects.filter(active_q(), user_id=user_id).order_by("-created_at"))
    if not rows:
        return None
    return max(rows, key=lambda row: SEVERITY.get(row.level, 0))


def apply(
    user_id: int,
    org_id: int | None,
    level: str,
    violations: int,
    until: datetime | None,
    reason: str,
    *,
    actor: Any = None,
) -> Suspension:
    """Throttle or suspend a user (``until`` None: until lifted). ``actor`` None is the
    platform (the offender counter). Idempotent for a repeat: an active row of the same
    user, organisation and level is extended (later ``until``, more violations), not
    duplicated; only a new row is an audit event. 400 for an unknown level or user."""
    if level not in SuspensionLevel.values:
        raise PlatformError(f"Unknown level '{str(level)[:20]}'.", param="level")
    if not get_user_model().objects.filter(pk=user_id).exists():
        raise PlatformError(f"No user {user_id}.", param="user")
    reason = (reason or "")[:MAX_REASON]
    with transaction.atomic():
        same = (
            Suspension.objects.select_for_update()
            .filter(active_q(), user_id=user_id, org_id=org_id, level=level)
            .order_by("-created_at")
            .first()
        )
        if same is not None:
            return _extend(same, violations, until, reason)
        row = Suspension.objects.create(
            user_id=user_id,
            org_id=org_id,
            level=level,
            violations=max(0, violations),
            until=until,
            reason=reason,
        )
        audit.record(
            "suspension.create",
            actor=actor,
            org=org_id,
            target_type="suspension",
            target_id=str(row.pk),
            data={
                "user_id": user_id,
                "level": level,
                "violations": row.violations,
                "until": until.isoformat() if until else None,
                "reason": reason,
            },
        )
        bump_on_commit()
    return row


def _extend(row: Suspension, violations: int, until: datetime | None, reason: str) -> Suspension:
    row.violations = max(row.violations, violations)
    if row.until is not None:
        row.until = None if until is None else max(row.until, until)
    row.reason = reason or row.reason
    row.save(update_fields=["violations", "until", "reason"])
    bump_on_commit()
    return row


def lift(actor: Any, suspension: Suspension) -> Suspension:
    """End a suspension now (409 if it was lifted already or has expired)."""
    with transaction.atomic():
        row = Suspension.objects.select_for_update().get(pk=suspension.pk)
        if not Suspension.objects.filter(active_q(), pk=row.pk).exists():
            raise Conflict("This suspension is not in force.", code="not_active")
        row.lifted_by = actor
        row.lifted_at = timezone.now()
        row.save(update_fields=["lifted_by", "lifted_at"])
        audit.record(
            "suspension.lift",
            actor=actor,
            org=row.org_id,
            target_type="suspension",
            target_id=str(row.pk),
            data={"user_id": row.user_id, "level": row.level},
        )
        bump_on_commit()
    return row


def apply_by(
    actor: Any, user: Any, org: Any, level: str, until: datetime | None, reason: str
) -> Suspension:
    """An admin's manual :func:`apply`: staff for anyone; an organisation's owners and
    admins for a member of that organisation (403 otherwise)."""
    if not is_staff(actor):
        manages = (
            org is not None
            and Membership.objects.filter(
                user=actor, organization=org, role__in=Role.managers()
            ).exists()
        )
        if not manages:
            raise PermissionDenied("Only staff, or an organisation's managers, suspend users.")
        if not Membership.objects.filter(user=user, organization=org).exists():
            raise PermissionDenied(f"'{user.get_username()}' is not a member of '{org.name}'.")
    if until is not None and until <= timezone.now():
        raise PlatformError("'until' must be in the future.", param="until")
    org_id = org.pk if org is not None else None
    return apply(user.pk, org_id, level, 0, until, reason, actor=actor)
