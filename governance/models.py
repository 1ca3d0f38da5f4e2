"""The content governance sub-platform's records.

- :class:`Policy`: what to do per risk category (threshold and action, separately for a
  request's input and a model's output) for an organisation or user, one deployment
  (served name) or one API key; the most specific enabled policy applies, and with none
  the platform default (:mod:`governance.policy`).
- :class:`ContentList` / :class:`ContentListVersion`: versioned, category-tagged lexicons,
  allow-lists and test question banks; every edit is a new version (the history).
- :class:`ModerationDecision`: one checked text that a policy did not simply allow (and,
  sampled, some that it did), with the checker results; written in batches by a worker
  from the Redis stream the gateway appends to (no database write on the hot path).
- :class:`ReviewItem` / :class:`Appeal`: the admins' review queue and the affected users'
  appeals; :class:`AuditEvent`: the append-only, hash-chained log of every decision and
  policy change (PostgreSQL refuses UPDATE and DELETE on it).
- :class:`Provenance`: the registry of generated content (content id, hashes, label), so
  ``/api/governance/verify`` can say whether and when the platform produced a text or file.
- :class:`Suspension`: users throttled or suspended for repeated violations.
- :class:`ComplianceReport`: a deployment's check against TC260-003's minimums and its
  sampling assessments (run through the evaluation sub-platform).
- :class:`ClassifierVersion`: a moderation classifier trained from an uploaded dataset.

Tenancy: rows with an owner are ``OwnedModel`` (``restrict()``); rows without one
(``owner_org`` and ``owner_user`` both null) are the platform's and only staff see them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from portal.models import APIKey, Organization
from portal.models.ids import public_id
from portal.models.ownership import OwnedModel


def review_id() -> str:
    return public_id("review-")


def appeal_id() -> str:
    return public_id("appeal-")


def report_id() -> str:
    return public_id("compliance-")


class Direction(models.TextChoices):
    INPUT = "input", "Input (the request)"
    OUTPUT = "output", "Output (the model's answer)"


class Action(models.TextChoices):
    ALLOW = "allow", "Allow"
    FLAG = "flag", "Flag for review"
    REDACT = "redact", "Redact the matched spans"
    BLOCK = "block", "Block"


class Policy(OwnedModel):
    """Moderation rules of an owner, optionally narrowed to one deployment or API key.

    ``rules``: ``{category: {"input": {"threshold": float, "action": str}, "output": {…}}}``
    where ``category`` is a risk code (``A1_d``), a class (``A2``), a detector (``PII_ID``)
    or ``"default"``; the most specific key wins (see :mod:`governance.policy`).
    ``offenders``: ``{"window_s": int, "throttle_after": int, "throttle_rpm": int,
    "suspend_after": int, "suspend_s": int}`` — blocked inputs of one user within the
    window after which they are throttled, then suspended.
    ``labels``: ``{"explicit": "none"|"start"|"end", "text": str}`` — the explicit
    AI-generated label added to generated text.
    ``version`` grows by one on every change (decisions record which version applied).
    """

    name = models.CharField(max_length=96)
    description = models.TextField(blank=True)
    # Narrowing: a served model name (a deployment) and/or one API key of the owner.
    served_name = models.CharField(max_length=200, blank=True, db_index=True)
    api_key = models.ForeignKey(
        APIKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    rules = models.JSONField(default=dict, blank=True)
    offenders = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_policy_name"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ListKind(models.TextChoices):
    LEXICON = "lexicon", "Lexicon (terms to flag)"
    ALLOW = "allow", "Allow-list (terms never flagged)"
    BANK_GENERATED = "bank_generated", "Question bank: generated-content assessment"
    BANK_REFUSE = "bank_refuse", "Question bank: should refuse"
    BANK_NON_REFUSAL = "bank_non_refusal", "Question bank: should not refuse"


class ContentList(OwnedModel):
    """A lexicon, allow-list or question bank; its items live in versions.

    Platform lists (no owner, staff only) apply to every request; an owner's lists apply
    where that owner's policy does.
    """

    name = models.CharField(max_length=96)
    kind = models.CharField(max_length=20, choices=ListKind.choices)
    description = models.TextField(blank=True)
    # The category of items that name none (lexicons) or the risk (banks).
    default_category = models.CharField(max_length=16, blank=True)
    current = models.ForeignKey(
        "ContentListVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    builtin = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_content_list"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ContentListVersion(models.Model):
    """One immutable version of a list: ``items`` = ``[{"text": str, "category": str}]``
    (a term for lexicons and allow-lists, a question for banks; ``category`` a risk
    code), with a note of what changed."""

    content_list = models.ForeignKey(ContentList, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    items = models.JSONField(default=list)
    item_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["content_list", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["content_list", "number"], name="unique_content_list_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.content_list} v{self.number}"


class DecisionSource(models.TextChoices):
    GATEWAY = "gateway", "Gateway (inline)"
    MODERATION_API = "moderation_api", "/v1/moderations"
    REPORT = "report", "User report"
    UPLOAD = "upload", "Upload check"


class ModerationDecision(models.Model):
    """One moderation decision with the checker results (see the module docstring)."""

    decision_id = models.CharField(max_length=64, unique=True)
    ts = models.DateTimeField(db_index=True)
    source = models.CharField(max_length=16, choices=DecisionSource.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    action = models.CharField(max_length=8, choices=Action.choices)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    content_id = models.CharField(max_length=64, blank=True, db_index=True)
    served_name = models.CharField(max_length=200, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(
        APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_version = models.PositiveIntegerField(default=0)
    # Risk codes whose score reached the policy's threshold, with their scores.
    categories = models.JSONField(default=list, blank=True)
    scores = models.JSONField(default=dict, blank=True)
    # Per checker: {"checker", "scores", "spans": [[start, end, category, term]]}.
    results = models.JSONField(default=list, blank=True)
    # The checked text (bounded by GOVERNANCE_EXCERPT_CHARS) and its SHA-256.
    excerpt = models.TextField(blank=True)
    text_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-ts"]
        indexes = [models.Index(fields=["org", "-ts"]), models.Index(fields=["user", "-ts"])]

    def __str__(self) -> str:
        return f"{self.decision_id} {self.direction} {self.action}"


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved (no violation)"
    REMOVED = "removed", "Removed (violation confirmed)"
    ESCALATED = "escalated", "Escalated"


class ReviewDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REMOVE = "remove", "Remove"
    ESCALATE = "escalate", "Escalate"
    ADJUST_LEXICON = "adjust_lexicon", "Adjust the lexicon"


class ReviewItem(models.Model):
    """A flagged text waiting for (or past) an admin's decision.

    ``owner_org`` is the organisation whose traffic or model it concerns (its owners and
    admins review it); with none, only staff do. ``subject_user`` is the user whose
    request or report it is (they may appeal). ``context``: the conversation, model, key
    prefix and checker scores as the reviewer needs them.
    """

    item_id = models.CharField(max_length=40, unique=True, default=review_id)
    owner_org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=DecisionSource.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    decision = models.ForeignKey(
        ModerationDecision, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    served_name = models.CharField(max_length=200, blank=True)
    content_id = models.CharField(max_length=64, blank=True, db_index=True)
    text = models.TextField()
    context = models.JSONField(default=dict, blank=True)
    categories = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)  # a reporter's words
    status = models.CharField(
        max_length=12, choices=ReviewStatus.choices, default=ReviewStatus.PENDING, db_index=True
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.CharField(max_length=16, choices=ReviewDecision.choices, blank=True)
    notes = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField()  # the time-to-review target
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner_org", "status", "-created_at"])]

    def __str__(self) -> str:
        return self.item_id


class AppealStatus(models.TextChoices):
    OPEN = "open", "Open"
    UPHELD = "upheld", "Upheld (the decision stands)"
    OVERTURNED = "overturned", "Overturned"


class Appeal(models.Model):
    """An affected user's appeal against a review decision."""

    appeal_id = models.CharField(max_length=40, unique=True, default=appeal_id)
    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="appeals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.TextField()
    status = models.CharField(max_length=12, choices=AppealStatus.choices, default="open")
    response = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.appeal_id


class AppendOnly(Exception):
    """An attempt to change or delete an audit event."""


class AuditEvent(models.Model):
    """One entry of the append-only audit log, chained: ``hash`` = SHA-256 over the
    previous entry's hash and this entry's canonical JSON (``governance.services.audit``
    writes them; a changed or removed row breaks the chain). PostgreSQL refuses UPDATE
    and DELETE on the table (a trigger from the migration); the ORM refuses them too."""

    ts = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    actor_name = models.CharField(max_length=150, blank=True)  # kept if the user goes
    org = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    action = models.CharField(max_length=64, db_index=True)  # e.g. "review.decide"
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["org", "-id"])]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnly("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnly("Audit events are append-only.")


class Provenance(models.Model):
    """A piece of content the platform generated (or labelled on export).

    ``text_sha256`` is over the normalised text (``governance.services.provenance``), so
    the same answer pasted back is found; ``label`` is the implicit AIGC label issued."""

    content_id = models.CharField(max_length=64, unique=True)
    ts = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=8, default="text")  # text | file
    file_kind = models.CharField(max_length=8, blank=True)  # md, docx, png, ...
    served_name = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    content_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    label = models.JSONField(default=dict, blank=True)
    watermarked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-ts"]

    def __str__(self) -> str:
        return self.content_id


class SuspensionLevel(models.TextChoices):
    THROTTLED = "throttled", "Throttled"
    SUSPENDED = "suspended", "Suspended"


class Suspension(models.Model):
    """A user throttled or suspended for repeated violations (until ``until``, or until
    an admin lifts it)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    level = models.CharField(max_length=10, choices=SuspensionLevel.choices)
    reason = models.TextField(blank=True)
    violations = models.PositiveIntegerField(default=0)
    until = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lifted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user_id} {self.level}"


class ReportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class ComplianceReport(OwnedModel):
    """A deployment's compliance check: ``checks`` = ``[{"id", "title", "value",
    "threshold", "passed", "detail"}]``; ``runs`` = the evaluation run ids it started."""

    report_id = models.CharField(max_length=40, unique=True, default=report_id)
    served_name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=ReportStatus.choices, default="pending")
    checks = models.JSONField(default=list, blank=True)
    runs = models.JSONField(default=list, blank=True)
    passed = models.BooleanField(null=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.report_id


class ClassifierVersion(models.Model):
    """A moderation classifier trained from a labelled dataset (``TEXT``, ``label``
    columns); the active one replaces the shipped COLD model in the pipeline. The weights
    are in the object store under ``artifact_prefix`` (no pickle)."""

    number = models.PositiveIntegerField(unique=True)
    source = models.CharField(max_length=300)  # dataset repo@revision:path, or "builtin:cold"
    status = models.CharField(max_length=10, choices=ReportStatus.choices, default="pending")
    metrics = models.JSONField(default=dict, blank=True)
    artifact_prefix = models.CharField(max_length=300, blank=True)
    active = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"classifier v{self.number}"
