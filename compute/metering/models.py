"""The usage ledger: one row per inference request, and hourly rollups of it.

Rows are an append-only ledger. Their references (key, user, organisation, model
version, replica, node) are foreign keys without database constraints that nothing
cascades to: deleting a key, a user or a node leaves its usage, and its id, in place.
"""

from __future__ import annotations

from typing import Any, Self

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.models import Membership, Role


def _ref(target: str) -> Any:
    return models.ForeignKey(
        target,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )


class UsageQuerySet(models.QuerySet[Any]):
    def restrict(self, user: Any, action: str = "read") -> Self:
        """The usage ``user`` may see: their own, plus what is billed to organisations
        they own or administer; admins see all. Usage is never written through the API."""
        if getattr(user, "is_superuser", False) and action == "read":
            return self
        if user is None or not user.is_authenticated or action != "read":
            return self.none()
        managed = Membership.objects.filter(user=user, role__in=Role.managers()).values(
            "organization_id"
        )
        return self.filter(Q(user=user) | Q(org__in=managed))


class UsageRecord(models.Model):
    """One ``/v1`` inference request, as the gateway saw it."""

    request_id = models.CharField(max_length=128, unique=True)
    time = models.DateTimeField(help_text="When the request arrived")
    key = _ref("portal.APIKey")
    user = _ref(settings.AUTH_USER_MODEL)
    org = _ref("portal.Organization")
    model = models.CharField(max_length=200, help_text="The served name the client asked for")
    model_version = _ref("portal.ModelVersion")
    replica = _ref("compute.Replica")
    node = _ref("compute.Node")
    endpoint = models.CharField(max_length=16)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    cost_cny = models.DecimalField(max_digits=20, decimal_places=10, default=0)

    objects = UsageQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["user", "time"], name="usage_user_time"),
            models.Index(fields=["org", "time"], name="usage_org_time"),
            models.Index(fields=["time"], name="usage_time"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status}"


class UsageHourly(models.Model):
    """Usage per hour (UTC) by key, user, organisation and model."""

    hour = models.DateTimeField()
    key = _ref("portal.APIKey")
    user = _ref(settings.AUTH_USER_MODEL)
    org = _ref("portal.Organization")
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_cny = models.DecimalField(max_digits=24, decimal_places=10, default=0)

    objects = UsageQuerySet.as_manager()

    class Meta:
        ordering = ["-hour", "model", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "key", "user", "org", "model"],
                nulls_distinct=False,
                name="usage_hourly_bucket",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "hour"], name="usage_hourly_user"),
            models.Index(fields=["org", "hour"], name="usage_hourly_org"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.model} x{self.requests}"
