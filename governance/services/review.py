"""The admins' review queue: items opened by flagged or blocked moderation decisions and
by users' reports, assigned and decided by reviewers, appealed by the affected user.

Who may review an item is :mod:`governance.services.scope`'s rule (staff, or the
managers of the item's organisation); the functions here re-check it so a caller that
skipped the scoped lookup still gets a 404, never someone else's row. Every verb writes
one audit event (``review.open|assign|decide|escalate``, ``report.create``,
``appeal.create|decide``) in the same transaction as its change, and changes status by
compare-and-swap, so two reviewers deciding at once get one success and one 409.

Statuses: ``pending`` and ``escalated`` are open (:data:`OPEN`); ``approved`` and
``removed`` are final (an overturned appeal turns ``removed`` into ``approved``).
``adjust_lexicon`` edits a lexicon or allow-list through :mod:`governance.services.lists`
and resolves the item as ``removed`` when it adds terms (the text was a violation the
lexicon missed) and ``approved`` when it only removes some (a false positive).
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from governance.models import (
    Action,
    Appeal,
    AppealStatus,
    ContentList,
    DecisionSource,
    Direction,
    ListKind,
    ModerationDecision,
    Provenance,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
)
from governance.services import audit, lists, scope
from portal.errors import Conflict, NotFound, PlatformError
from portal.models import ModelRepo
from portal.models.keys import model_namespace

OPEN = (ReviewStatus.PENDING, ReviewStatus.ESCALATED)
FINAL = (ReviewStatus.APPROVED, ReviewStatus.REMOVED)
# What a report may carry: its context as JSON and the reported text.
MAX_CONTEXT_BYTES = 64 * 1024
MAX_REPORT_CHARS = 32_000
MAX_LEXICON_TERMS = 1000
_STATUS_OF = {
    ReviewDecision.APPROVE: ReviewStatus.APPROVED,
    ReviewDecision.REMOVE: ReviewStatus.REMOVED,
    ReviewDecision.ESCALATE: ReviewStatus.ESCALATED,
}


def target_s() -> int:
    """The time-to-review target in seconds (``GOVERNANCE_REVIEW_TARGET_S``)."""
    return int(getattr(settings, "GOVERNANCE_REVIEW_TARGET_S", 86400))


def due_from(start: Any = None) -> Any:
    """When an item opened at ``start`` (default now) is due for review."""
    return (start or timezone.now()) + timedelta(seconds=target_s())


def overdue_q(now: Any = None) -> Q:
    """Open items past their due time (a filter for :class:`ReviewItem` querysets)."""
    return Q(status__in=OPEN, due_at__lt=now or timezone.now())


def overdue(rows: QuerySet[ReviewItem], now: Any = None) -> QuerySet[ReviewItem]:
    """``rows`` narrowed to the open items past their due time."""
    return rows.filter(overdue_q(now))


# --- opening items --------------------------------------------------------------------


def open_for_decision(decision: ModerationDecision, context: dict[str, Any]) -> ReviewItem | None:
    """The review item of a ``flag`` or ``block`` decision, opened on first call.

    Idempotent per decision (the decision row is locked while looking, so two drains
    racing open one item): a second call returns the item the first opened. Decisions
    that allowed or redacted open none (None). ``context`` is what the gateway kept of
    the conversation (messages, model); the checker scores and key prefix are added.
    The item belongs to the organisation of the traffic, else to the organisation
    whose policy decided, else to the platform (staff).
    """
    if decision.action not in (Action.FLAG, Action.BLOCK):
        return None
    with transaction.atomic():
        # Locks the decision: a concurrent call waits here, then finds the item.
        ModerationDecision.objects.select_for_update().filter(pk=decision.pk).first()
        existing = ReviewItem.objects.filter(decision=decision).first()
        if existing is not None:
            return existing
        item = ReviewItem.objects.create(
            owner_org_id=decision.org_id or _policy_org_id(decision),
            subject_user_id=decision.user_id,
            source=decision.source,
            direction=decision.direction,
            decision=decision,
            served_name=decision.served_name,
            content_id=decision.content_id,
            text=decision.excerpt,
            context=_decision_context(decision, context),
            categories=list(decision.categories),
            due_at=due_from(decision.ts),
        )
        audit.record(
            "review.open",
            org=item.owner_org_id,
            target_type="review",
            target_id=item.item_id,
            data={"decision": decision.decision_id, "action": decision.action},
        )
    return item


def _policy_org_id(decision: ModerationDecision) -> int | None:
    if decision.policy_id is None:
        return None
    policy = decision.policy
    return policy.owner_org_id if policy is not None else None


def _decision_context(decision: ModerationDecision, context: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "action": decision.action,
        "scores": decision.scores,
        "results": decision.results,
        "request_id": decision.request_id,
        "policy_version": decision.policy_version,
    }
    if decision.api_key_id is not None and decision.api_key is not None:
        extra["key_prefix"] = decision.api_key.prefix
    return {**(context or {}), **extra}


def report(
    user: Any,
    *,
    content_id: str = "",
    text: str,
    served_name: str = "",
    context: dict[str, Any],
    reason: str,
) -> ReviewItem:
    """A user's report of a generated answer ("report this answer"), as a pending item.

    The item belongs to the organisation that owns the model (the served name's
    namespace, or the model named by the content id's provenance); a model of a user, or
    none, makes it the platform's. The text is scored by the cheap checkers so the
    reviewer sees why it might be a violation. Raises PlatformError: 400 for an empty
    or oversized text or context, 429 past ``GOVERNANCE_REPORTS_PER_HOUR`` reports of
    the user in the last hour.
    """
    text = _checked_text(text)
    context = _checked_context(context)
    _check_report_rate(user)
    if content_id and not served_name:
        found = Provenance.objects.filter(content_id=content_id)
        served_name = found.values_list("served_name", flat=True).first() or ""
    verdict = _pipeline().run(text)
    scores = {code: round(score, 4) for code, score in verdict.scores.items() if score > 0}
    with transaction.atomic():
        item = ReviewItem.objects.create(
            owner_org_id=model_owner_org_id(served_name),
            subject_user=user,
            source=DecisionSource.REPORT,
            direction=Direction.OUTPUT,
            served_name=served_name,
            content_id=content_id,
            text=text,
            context={**context, "scores": scores},
            categories=sorted(code for code, hit in verdict.categories.items() if hit),
            reason=reason,
            due_at=due_from(),
        )
        audit.record(
            "report.create",
            actor=user,
            org=item.owner_org_id,
            target_type="review",
            target_id=item.item_id,
            data={"served_name": served_name, "content_id": content_id, "reason": reason[:500]},
        )
    return item


def _check_report_rate(user: Any) -> None:
    limit = int(getattr(settings, "GOVERNANCE_REPORTS_PER_HOUR", 30))
    since = timezone.now() - timedelta(hours=1)
    made = ReviewItem.objects.filter(
        subject_user_id=user.pk, source=DecisionSource.REPORT, created_at__gte=since
    )
    if limit and made.count() >= limit:
        raise PlatformError(
            f"At most {limit} reports an hour; try again later.",
            code="rate_limit_exceeded",
            status=429,
            headers={"Retry-After": "600"},
        )


def model_owner_org_id(served_name: str) -> int | None:
    """The id of the organisation owning the served model, or None (a user's model,
    an unknown name, or none)."""
    if not served_name:
        return None
    namespace = model_namespace(served_name)
    owners = ModelRepo.objects.filter(namespace=namespace, owner_org__isnull=False)
    return owners.values_list("owner_org_id", flat=True).first()


@functools.cache
def _pipeline() -> Any:
    # The cheap checkers only: a report must not wait for (or train) the classifier.
    from governance.moderation.pipeline import default_pipeline

    return default_pipeline(classifier=False)


def _checked_text(text: str) -> str:
    if not text or not text.strip():
        raise PlatformError("The reported text is empty.", param="text")
    if len(text) > MAX_REPORT_CHARS or "\x00" in text:
        raise PlatformError(
            f"The reported text must be at most {MAX_REPORT_CHARS} characters, without NUL.",
            param="text",
        )
    return text


def _checked_context(context: Any) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise PlatformError("The context must be a JSON object.", param="context")
    encoded = json.dumps(context, ensure_ascii=True)
    # PostgreSQL's jsonb cannot hold NUL characters.
    if len(encoded) > MAX_CONTEXT_BYTES or "\\u0000" in encoded:
        raise PlatformError(
            f"The context must be at most {MAX_CONTEXT_BYTES} bytes of JSON, without NUL.",
            param="context",
        )
    return context


# --- reviewing ------------------------------------------------------------------------


def _reviewable(actor: Any, item: ReviewItem) -> None:
    if not scope.can_review(actor, item):
        raise NotFound("No such review item.", param="item_id")


def assign(actor: Any, item: ReviewItem, assignee: Any) -> ReviewItem:
    """Assign an open item to ``assignee`` (a user who may review it) or, with None,
    unassign it. 404 when ``actor`` may not review it, 400 when ``assignee`` may not,
    409 once it is decided."""
    _reviewable(actor, item)
    if assignee is not None and not scope.can_review(assignee, item):
        raise PlatformError("That user may not review this item.", param="assignee")
    with transaction.atomic():
        changed = ReviewItem.objects.filter(pk=item.pk, status__in=OPEN).update(
            assigned_to=assignee
        )
        if not changed:
            raise Conflict("This item has already been decided.", code="review_decided")
        audit.record(
            "review.assign",
            actor=actor,
            org=item.owner_org_id,
            target_type="review",
            target_id=item.item_id,
            data={"assignee": assignee.get_username() if assignee is not None else None},
        )
    item.refresh_from_db()
    return item


def decide(
    actor: Any,
    item: ReviewItem,
    decision: str,
    notes: str = "",
    lexicon: dict[str, Any] | None = None,
) -> ReviewItem:
    """Decide an open item: ``approve`` (no violation), ``remove`` (violation
    confirmed), ``escalate`` (to staff; stays open) or ``adjust_lexicon`` (with
    ``lexicon={"list": id, "add": [...], "remove": [...]}``, see the module docstring).

    404 when ``actor`` may not review it, 400 for an unknown decision or a bad lexicon
    change, 409 when it was decided meanwhile.
    """
    _reviewable(actor, item)
    if decision not in ReviewDecision.values:
        raise PlatformError(f"Unknown decision {decision!r}.", param="decision")
    if decision == ReviewDecision.ADJUST_LEXICON and not lexicon:
        raise PlatformError("adjust_lexicon needs a lexicon change.", param="lexicon")
    with transaction.atomic():
        change = _adjust_lexicon(actor, item, lexicon) if decision == "adjust_lexicon" else None
        status = _status_for(decision, change)
        now = timezone.now()
        fields: dict[str, Any] = {"status": status, "resolution": decision, "notes": notes}
        fields |= {"decided_by": actor, "decided_at": now}
        if status == ReviewStatus.ESCALATED:
            fields["due_at"] = due_from(now)
        if not ReviewItem.objects.filter(pk=item.pk, status__in=OPEN).update(**fields):
            raise Conflict("This item has already been decided.", code="review_decided")
        audit.record(
            "review.decide",
            actor=actor,
            org=item.owner_org_id,
            target_type="review",
            target_id=item.item_id,
            data={"decision": decision, "status": status, "notes": notes[:2000], "lexicon": change},
        )
    item.refresh_from_db()
    return item


def _status_for(decision: str, change: dict[str, Any] | None) -> str:
    if decision == ReviewDecision.ADJUST_LEXICON:
        return ReviewStatus.REMOVED if change and change["added"] else ReviewStatus.APPROVED
    return _STATUS_OF[ReviewDecision(decision)]


def _adjust_lexicon(actor: Any, item: ReviewItem, lexicon: dict[str, Any] | None) -> dict[str, Any]:
    """Apply ``lexicon`` to the named list (one new version); what changed."""
    given = lexicon or {}
    target = _writable_list(actor, given.get("list"))
    category = item.categories[0] if item.categories else target.default_category
    add = [_term(term, category) for term in _terms(given, "add")]
    remove = _terms(given, "remove")
    if not add and not remove:
        raise PlatformError("Name terms to add or remove.", param="lexicon")
    lists.change_items(actor, target, add=add, remove=remove, note=f"review {item.item_id}")
    added = [term.get("text") for term in add]
    return {"list": target.pk, "name": target.name, "added": added, "removed": remove}


def _writable_list(actor: Any, list_id: Any) -> ContentList:
    rows = lists.visible_lists(actor, "write").filter(kind__in=(ListKind.LEXICON, ListKind.ALLOW))
    found: ContentList | None
    try:
        found = rows.filter(pk=int(list_id)).first()
    except (TypeError, ValueError, OverflowError):
        found = None
    if found is None:
        raise PlatformError("No such lexicon or allow-list.", param="lexicon.list")
    return found


def _terms(given: dict[str, Any], key: str) -> list[Any]:
    terms = given.get(key) or []
    if not isinstance(terms, list) or len(terms) > MAX_LEXICON_TERMS:
        raise PlatformError(f"A list of at most {MAX_LEXICON_TERMS} terms.", param=f"lexicon.{key}")
    return terms


def _term(term: Any, category: str) -> dict[str, Any]:
    # A bare term takes the item's category; the lists service validates the rest.
    if isinstance(term, dict):
        return {"category": category, **term}
    return {"text": term, "category": category}


# --- appeals --------------------------------------------------------------------------


def appeal(user: Any, item: ReviewItem, reason: str) -> Appeal:
    """The affected user's appeal against the removal of their item.

    404 unless ``user`` is the item's subject; 409 unless the item was removed or when
    an appeal of it is still open; 400 for an empty reason.
    """
    if item.subject_user_id is None or item.subject_user_id != getattr(user, "pk", None):
        raise NotFound("No such review item.", param="item_id")
    if not reason or not reason.strip():
        raise PlatformError("Say why the decision is wrong.", param="reason")
    with transaction.atomic():
        ReviewItem.objects.select_for_update().filter(pk=item.pk).first()
        item.refresh_from_db()
        if item.status != ReviewStatus.REMOVED:
            raise Conflict("Only a removal can be appealed.", code="not_appealable")
        if item.appeals.filter(status=AppealStatus.OPEN).exists():
            raise Conflict("An appeal of this item is already open.", code="appeal_open")
        made = Appeal.objects.create(item=item, user=user, reason=reason)
        audit.record(
            "appeal.create",
            actor=user,
            org=item.owner_org_id,
            target_type="appeal",
            target_id=made.appeal_id,
            data={"item": item.item_id, "reason": reason[:2000]},
        )
    return made


def decide_appeal(actor: Any, appeal: Appeal, upheld: bool, response: str = "") -> Appeal:
    """Uphold the removal or overturn it (the item becomes ``approved``).

    404 when ``actor`` may not review the item, 409 once the appeal is decided.
    """
    item = appeal.item
    _reviewable(actor, item)
    status = AppealStatus.UPHELD if upheld else AppealStatus.OVERTURNED
    now = timezone.now()
    with transaction.atomic():
        changed = Appeal.objects.filter(pk=appeal.pk, status=AppealStatus.OPEN).update(
            status=status, response=response, decided_by=actor, decided_at=now
        )
        if not changed:
            raise Conflict("This appeal has already been decided.", code="appeal_decided")
        if not upheld:
            ReviewItem.objects.filter(pk=item.pk).update(status=ReviewStatus.APPROVED)
        audit.record(
            "appeal.decide",
            actor=actor,
            org=item.owner_org_id,
            target_type="appeal",
            target_id=appeal.appeal_id,
            data={"item": item.item_id, "status": status, "response": response[:2000]},
        )
    appeal.refresh_from_db()
    return appeal


# --- the time-to-review target --------------------------------------------------------


def escalate_overdue(limit: int = 500) -> list[str]:
    """Escalate pending items past their due time (the platform's staff then see them
    as escalated, with a fresh due time); the ids escalated. Escalated items that are
    overdue again stay as they are: the queue's ``overdue`` filter shows them."""
    now = timezone.now()
    late = list(
        ReviewItem.objects.filter(status=ReviewStatus.PENDING, due_at__lt=now)
        .order_by("due_at")
        .values_list("pk", "item_id", "owner_org_id")[:limit]
    )
    escalated: list[str] = []
    for pk, item_id, org_id in late:
        with transaction.atomic():
            if not ReviewItem.objects.filter(pk=pk, status=ReviewStatus.PENDING).update(
                status=ReviewStatus.ESCALATED, due_at=due_from(now)
            ):
                continue
            audit.record(
                "review.escalate",
                org=org_id,
                target_type="review",
                target_id=item_id,
                data={"reason": "overdue", "target_s": target_s()},
            )
        escalated.append(item_id)
    return escalated
