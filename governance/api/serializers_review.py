"""Shapes of the review queue, reports, appeals, decisions and audit log API: what goes
in (checked here, acted on by :mod:`governance.services.review`) and what comes out."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from governance.models import (
    Action,
    Appeal,
    AppealStatus,
    AuditEvent,
    DecisionSource,
    Direction,
    ModerationDecision,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
)
from governance.services import review

# The checks behind these limits live in the review service; here they bound the input.
MAX_NOTES = 5000
MAX_TERM = 200
RESOLUTION_HELP = "approve, remove, escalate or adjust_lexicon; empty until decided"


class Serializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


def _name(user: Any) -> str | None:
    return user.get_username() if user is not None else None


# --- out ------------------------------------------------------------------------------


class ReviewItemSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A review item as its reviewers see it: the text, its context and scores."""

    owner_org = serializers.SerializerMethodField()
    subject_user = serializers.SerializerMethodField()
    assigned_to = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()
    decision_id = serializers.SerializerMethodField()
    resolution = serializers.CharField(read_only=True, help_text=RESOLUTION_HELP)
    overdue = serializers.SerializerMethodField()

    class Meta:
        model = ReviewItem
        fields = [
            "item_id",
            "owner_org",
            "subject_user",
            "source",
            "direction",
            "decision_id",
            "served_name",
            "content_id",
            "text",
            "context",
            "categories",
            "reason",
            "status",
            "assigned_to",
            "resolution",
            "notes",
            "decided_by",
            "decided_at",
            "due_at",
            "overdue",
            "created_at",
        ]
        read_only_fields = fields

    def get_owner_org(self, item: ReviewItem) -> str | None:
        return item.owner_org.name if item.owner_org is not None else None

    def get_subject_user(self, item: ReviewItem) -> str | None:
        return _name(item.subject_user)

    def get_assigned_to(self, item: ReviewItem) -> str | None:
        return _name(item.assigned_to)

    def get_decided_by(self, item: ReviewItem) -> str | None:
        return _name(item.decided_by)

    def get_decision_id(self, item: ReviewItem) -> str | None:
        return item.decision.decision_id if item.decision is not None else None

    def get_overdue(self, item: ReviewItem) -> bool:
        return item.status in review.OPEN and item.due_at < timezone.now()


class MyReviewSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A review item as the affected user (or reporter) sees it: no reviewer notes."""

    resolution = serializers.CharField(read_only=True, help_text=RESOLUTION_HELP)
    appealable = serializers.SerializerMethodField()

    class Meta:
        model = ReviewItem
        fields = [
            "item_id",
            "source",
            "direction",
            "served_name",
            "content_id",
            "text",
            "categories",
            "reason",
            "status",
            "resolution",
            "decided_at",
            "created_at",
            "appealable",
        ]
        read_only_fields = fields

    def get_appealable(self, item: ReviewItem) -> bool:
        return item.status == ReviewStatus.REMOVED


class AppealSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    item_id = serializers.CharField(source="item.item_id", read_only=True)
    user = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()

    class Meta:
        model = Appeal
        fields = [
            "appeal_id",
            "item_id",
            "user",
            "reason",
            "status",
            "response",
            "decided_by",
            "decided_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_user(self, appeal: Appeal) -> str:
        return appeal.user.get_username()

    def get_decided_by(self, appeal: Appeal) -> str | None:
        return _name(appeal.decided_by)


class DecisionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """One moderation decision with its checker results."""

    user = serializers.SerializerMethodField()
    org = serializers.SerializerMethodField()
    key_prefix = serializers.SerializerMethodField()

    class Meta:
        model = ModerationDecision
        fields = [
            "decision_id",
            "ts",
            "source",
            "direction",
            "action",
            "request_id",
            "content_id",
            "served_name",
            "user",
            "org",
            "key_prefix",
            "policy_id",
            "policy_version",
            "categories",
            "scores",
            "results",
            "excerpt",
            "text_sha256",
        ]
        read_only_fields = fields

    def get_user(self, decision: ModerationDecision) -> str | None:
        return _name(decision.user)

    def get_org(self, decision: ModerationDecision) -> str | None:
        return decision.org.name if decision.org is not None else None

    def get_key_prefix(self, decision: ModerationDecision) -> str | None:
        return decision.api_key.prefix if decision.api_key is not None else None


class AuditEventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    actor = serializers.CharField(source="actor_name", read_only=True)
    org = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "ts",
            "actor",
            "org",
            "action",
            "target_type",
            "target_id",
            "data",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields

    def get_org(self, event: AuditEvent) -> str | None:
        # No foreign-key constraint (the log outlives organisations): the name if it exists.
        org = event.org if event.org_id is not None else None
        return org.name if org is not None else None


class ChainCheckSerializer(Serializer):
    ok = serializers.BooleanField(help_text="Whether the whole chain re-computes")
    checked = serializers.IntegerField(
        allow_null=True, help_text="Entries checked (staff only; null for others)"
    )
    broken_at = serializers.IntegerField(
        allow_null=True, help_text="The first entry that does not chain (if you may see it)"
    )
    reason = serializers.CharField(allow_blank=True)


# --- in -------------------------------------------------------------------------------


def _serializer(name: str, **fields: serializers.Field[Any, Any, Any, Any]) -> type[Serializer]:
    """A serializer class with ``fields``: for field names such as ``source`` and
    ``context`` that a class body cannot declare without shadowing DRF's attributes."""
    return type(name, (Serializer,), fields)


ReviewQuerySerializer = _serializer(
    "ReviewQuerySerializer",
    status=serializers.ChoiceField(choices=ReviewStatus.choices, required=False),
    source=serializers.ChoiceField(choices=DecisionSource.choices, required=False),
    overdue=serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only open items past due"
    ),
    assigned_to_me=serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only items assigned to you"
    ),
)


class AssignSerializer(Serializer):
    assignee = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=150,
        help_text="A reviewer's username; null unassigns; omitted: yourself",
    )


class LexiconChangeSerializer(Serializer):
    list = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, help_text="Id of a lexicon or allow-list"
    )
    add = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TERM),
        required=False,
        max_length=review.MAX_LEXICON_TERMS,
    )
    remove = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TERM),
        required=False,
        max_length=review.MAX_LEXICON_TERMS,
    )


class DecideSerializer(Serializer):
    decision = serializers.ChoiceField(choices=ReviewDecision.choices)
    notes = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTES
    )
    lexicon = LexiconChangeSerializer(
        required=False, allow_null=True, help_text="For adjust_lexicon: the terms to change"
    )


ReportSerializer = _serializer(
    "ReportSerializer",
    content_id=serializers.CharField(
        required=False, allow_blank=True, default="", max_length=64, help_text="aigc-…"
    ),
    text=serializers.CharField(
        max_length=review.MAX_REPORT_CHARS, trim_whitespace=False, help_text="The answer"
    ),
    served_name=serializers.CharField(
        required=False, allow_blank=True, default="", max_length=200, help_text="The model"
    ),
    context=serializers.DictField(
        required=False, default=dict, help_text="The conversation, as the playground has it"
    ),
    reason=serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTES
    ),
)


class AppealCreateSerializer(Serializer):
    reason = serializers.CharField(max_length=MAX_NOTES)


class AppealQuerySerializer(Serializer):
    status = serializers.ChoiceField(choices=AppealStatus.choices, required=False)


class AppealDecideSerializer(Serializer):
    upheld = serializers.BooleanField(help_text="true: the removal stands; false: overturned")
    response = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTES
    )


DecisionQuerySerializer = _serializer(
    "DecisionQuerySerializer",
    action=serializers.ChoiceField(choices=Action.choices, required=False),
    direction=serializers.ChoiceField(choices=Direction.choices, required=False),
    source=serializers.ChoiceField(choices=DecisionSource.choices, required=False),
    served_name=serializers.CharField(required=False, max_length=200),
    since=serializers.DateTimeField(required=False),
    until=serializers.DateTimeField(required=False),
)


class AuditQuerySerializer(Serializer):
    action = serializers.CharField(
        required=False, max_length=64, help_text="An action, or a prefix ending in '.'"
    )
    actor = serializers.CharField(required=False, max_length=150, help_text="A username")
    target = serializers.CharField(
        required=False, max_length=100, help_text="A target id, or type:id"
    )
    org = serializers.CharField(required=False, max_length=64, help_text="Organisation name")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    format = serializers.ChoiceField(
        choices=[("json", "json"), ("csv", "csv"), ("jsonl", "jsonl")],
        required=False,
        help_text="csv or jsonl: stream the whole filtered log as a download",
    )
