"""Organisations and memberships. Users are Django's own ``auth.User``."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

NAMESPACE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
namespace_validator = RegexValidator(
    NAMESPACE_RE, "Use letters, digits, '-', '_' and '.', starting with a letter or digit."
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"

    @classmethod
    def managers(cls) -> list[str]:
        """Roles that may change the organisation's resources."""
        return [cls.OWNER, cls.ADMIN]


class MonthlyBudget(models.Model):
    """Monthly caps on tokens and on spend (CNY); empty means unlimited."""

    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_spend_budget_cny = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )

    class Meta:
        abstract = True


class Organization(MonthlyBudget):
    name = models.CharField(max_length=64, unique=True, validators=[namespace_validator])
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="organizations"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organization_id}:{self.role}"


class UserBudget(MonthlyBudget):
    """A user's own monthly budgets (Django's user model has no room for them)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget"
    )

    def __str__(self) -> str:
        return f"budget of {self.user_id}"
